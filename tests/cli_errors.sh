#!/usr/bin/env bash
# Command-line error paths: each bad input exits non-zero with a message naming the culprit,
# and no checkpoint is left behind. Usage: cli_errors.sh BITSWITCH_BINARY TMP_DIR
set -u
BIN=$1
TMP=$2
rm -rf "$TMP" && mkdir -p "$TMP"
passed=0
failed=0

expect_error() {  # expect_error "message substring" args...
  local want=$1
  shift
  local out rc
  out=$("$BIN" "$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$want" <<<"$out"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: bitswitch $* (exit $rc), expected '$want' in:"
    echo "$out" | head -5
  fi
}

printf 'epochs: 1\nlerning_rate: 0.1\n' >"$TMP/typo.yaml"
printf '{"epochs": "two"}' >"$TMP/type.json"
echo "not a checkpoint" >"$TMP/garbage.pt"
mkdir -p "$TMP/badidx"
printf 'garbage' | gzip >"$TMP/badidx/train-images-idx3-ubyte.gz"

expect_error "bit-width 9 is outside [2, 8]" train --bits 8,9 --out "$TMP/r1"
expect_error "bit-width 4 appears more than once" train --bits 8,4,4 --out "$TMP/r1"
expect_error "--epochs: 'abc' is not an integer" train --epochs abc --out "$TMP/r1"
expect_error "typo.yaml: unknown field 'lerning_rate'" train --config "$TMP/typo.yaml" --out "$TMP/r1"
expect_error "type.json: field 'epochs' must be an integer" train --config "$TMP/type.json" --out "$TMP/r1"
expect_error "unknown model 'resnet99'" train --model resnet99 --out "$TMP/r1" --train-limit 128
expect_error "unknown dataset 'mnist3d'" train --dataset mnist3d --out "$TMP/r1"
expect_error "train-images-idx3-ubyte.gz" train --data-dir "$TMP/badidx" --out "$TMP/r1"
expect_error "garbage.pt' is corrupt or not a bitswitch checkpoint" eval --checkpoint "$TMP/garbage.pt"
expect_error "missing.pt' does not exist" eval --checkpoint "$TMP/missing.pt"
expect_error "garbage.pt' is corrupt" train --init "$TMP/garbage.pt" --out "$TMP/r2" --train-limit 128
expect_error "config.json' does not exist" train --resume --out "$TMP/nothing-here"
expect_error "dataset imagefolder: --data-dir is required" train --dataset imagefolder --model resnet18 --out "$TMP/r1"
mkdir -p "$TMP/imgs/train/a" "$TMP/imgs/val"
expect_error "imgs/train' has no .jpg/.jpeg files" train --dataset imagefolder --data-dir "$TMP/imgs" --out "$TMP/r1"
expect_error "cannot open safetensors file '$TMP/none.safetensors'" train --pretrained "$TMP/none.safetensors" --out "$TMP/r2" --train-limit 128
expect_error "either \`init\` (a checkpoint) or \`pretrained\`" train --init a.pt --pretrained b.safetensors --out "$TMP/r2"
# mixed precision
expect_error "hasb needs \`init\`" train --hasb --out "$TMP/r1"
expect_error "roulette must be hessian or uniform, got 'random'" train --hasb --init "$TMP/x.pt" --roulette random --out "$TMP/r1"
expect_error "give a budget" search --checkpoint "$TMP/garbage.pt" --traces "$TMP/type.json"
expect_error "budget kind 'size' must be avg-bits, bytes or bitops" search --checkpoint "$TMP/garbage.pt" --traces "$TMP/type.json" --sweep size:1:2:3
expect_error "objective must be reference" search --checkpoint "$TMP/garbage.pt" --traces "$TMP/type.json" --avg-bits 4 --objective hawk
expect_error "type.json': not a bitswitch traces file" search --checkpoint "$TMP/garbage.pt" --traces "$TMP/type.json" --avg-bits 4
expect_error "missing.pt' does not exist" hessian --checkpoint "$TMP/missing.pt" -o "$TMP/t.json"
expect_error "run directory '$TMP/no-run' does not exist" report "$TMP/no-run"
# deployment
echo "not safetensors" >"$TMP/garbage.safetensors"
printf '{"blocks.0.conv1": 5}' >"$TMP/lb.json"
expect_error "garbage.pt' is corrupt" export --checkpoint "$TMP/garbage.pt" -o "$TMP/m.safetensors"
expect_error "garbage.safetensors" inspect "$TMP/garbage.safetensors"
expect_error "cannot open safetensors file '$TMP/none.safetensors'" switch "$TMP/none.safetensors" --bits 4 -o "$TMP/m4.safetensors"
expect_error "excludes" switch "$TMP/garbage.safetensors" --bits 4 --layer-bits "$TMP/lb.json" -o "$TMP/m4.safetensors"
expect_error "give --bits B or --layer-bits FILE" switch "$TMP/garbage.safetensors" -o "$TMP/m4.safetensors"
expect_error "--isa: 'sse' is not one of" infer "$TMP/garbage.safetensors" --isa sse
# language-model decoding (the LM seeds of fuzz/corpus: byte tokenizer, context 16, bits 8,4,2)
CORPUS=$(cd "$(dirname "$0")/../fuzz/corpus" && pwd)
expect_error "is not a language-model artifact" generate "$CORPUS/artifact-smallcnn.safetensors" --prompt hi
expect_error "width 6 is not in the artifact's bit list 8,4,2" generate "$CORPUS/artifact-lm-master.safetensors" --bits 6 --prompt hi
expect_error "is already switched to w2" perplexity "$CORPUS/artifact-lm-w2.safetensors" --bits 4
expect_error "perplexity: cannot read '$TMP/none.txt'" perplexity "$CORPUS/artifact-lm-w2.safetensors" --text "$TMP/none.txt"
expect_error "generate: the prompt is empty" generate "$CORPUS/artifact-lm-w2.safetensors" --prompt ""
expect_error "the model's context is 16" generate "$CORPUS/artifact-lm-w2.safetensors" --prompt "more than sixteen bytes"
if ls "$TMP"/m.safetensors "$TMP"/m4.safetensors >/dev/null 2>&1; then
  echo "FAIL: a failed export or switch left an artifact"
  failed=$((failed + 1))
fi

if ls "$TMP"/r1/checkpoint.pt "$TMP"/r2/checkpoint.pt >/dev/null 2>&1; then
  echo "FAIL: a failed run left a checkpoint"
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi
echo "cli_errors: $passed passed, $failed failed"
[ $failed -eq 0 ]
