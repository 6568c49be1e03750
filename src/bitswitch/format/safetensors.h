// safetensors reader and writer (no LibTorch): the file format of the deployment artifact and of
// FP32 weight import/export. It sits below both `models` and `deploy`, which share it.
//
// Format: 8-byte little-endian u64 N, then N bytes of JSON header
//   {"<name>": {"dtype": "I8", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the raw little-endian data buffer; data_offsets are relative to the buffer start.
// The reader validates every field and rejects any malformed input with a bitswitch::Error
// naming the file, the tensor and the bad value; it never reads outside the given bytes.
// As in the reference implementation, the tensors must tile the data buffer exactly:
// overlaps, holes and trailing bytes are errors.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace bitswitch::format {

// Size in bytes of one element of a safetensors dtype ("F32" -> 4). Throws for unknown names.
size_t safetensors_dtype_size(const std::string& dtype);
// True for the dtypes this implementation knows: BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16
// I32 U32 F32 I64 U64 F64.
bool is_safetensors_dtype(const std::string& dtype);

// A tensor inside a parsed file. `data` points into the parsed buffer (not necessarily aligned
// to the element size when parsing an arbitrary buffer; files from our writer are aligned).
struct TensorView {
  std::string dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
};

class SafeTensors {
 public:
  SafeTensors() = default;

  // The name used in error messages (the path for files).
  const std::string& source() const { return source_; }
  bool contains(const std::string& tensor) const { return tensors_.count(tensor) != 0; }
  // Throws, naming the file and the tensor, if there is no such tensor.
  const TensorView& get(const std::string& tensor) const;
  // get() plus a check of the dtype (and of the shape), naming expected and actual values.
  const TensorView& get(const std::string& tensor, const std::string& dtype) const;
  const TensorView& get(const std::string& tensor, const std::string& dtype,
                        const std::vector<int64_t>& shape) const;
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Throws, naming the file and key, if the metadata entry is missing.
  const std::string& metadata(const std::string& key) const;

 private:
  friend SafeTensors parse_safetensors(const uint8_t*, size_t, const std::string&);
  friend SafeTensors read_safetensors(const std::string&);

  std::string source_;
  std::shared_ptr<const std::vector<uint8_t>> storage_;  // set when this object owns the bytes
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a safetensors image held in memory. The views point into `data`,
// which must outlive the result. `name_for_errors` prefixes every error message.
SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& name_for_errors);

// Reads and validates a whole file; the result owns its bytes.
SafeTensors read_safetensors(const std::string& path);

// One tensor to write. `bytes` holds numel * dtype_size little-endian bytes.
struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Convenience constructor from any trivially copyable element array.
TensorToWrite make_tensor(const std::string& name, const std::string& dtype,
                          const std::vector<int64_t>& shape, const void* data, size_t nbytes);

// Serializes to a safetensors image. Tensors are laid out by decreasing element size, then
// name, so every tensor is aligned to its element size (the header is padded with spaces to a
// multiple of 8 bytes). Checks names (non-empty, unique, not "__metadata__"), dtypes and sizes.
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

// Writes the image atomically: to `path.tmp.<pid>`, fsync, rename over `path`.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace bitswitch::format
