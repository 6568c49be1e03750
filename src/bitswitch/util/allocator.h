// Process-wide allocator tuning for training on CPU.
#pragma once

namespace bitswitch {

// LibTorch's CPU allocator calls malloc for every tensor; glibc serves blocks above its mmap
// threshold with fresh mappings, so each step's large temporaries (activations, gradients,
// fake-quantized copies) are faulted in page by page again. This raises the threshold and
// the trim threshold so that freed blocks are reused. Call once at program start; idempotent.
// Returns whether the settings took effect (false where the C library is not glibc).
bool tune_allocator_for_training();

}  // namespace bitswitch
