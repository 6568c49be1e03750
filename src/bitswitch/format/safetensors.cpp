// safetensors reader (validating every header field) and atomic writer; see safetensors.h.
#include "bitswitch/format/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bitswitch::format assumes a little-endian host (safetensors data is little-endian)"
#endif

namespace bitswitch::format {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;  // 100 MB, as in the reference
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},   {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2},  {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"I64", 8},  {"U64", 8},     {"F64", 8},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string known_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) {
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

// A JSON value for an error message, cut to a readable length.
std::string show(const json& v) {
  std::string s;
  try {
    s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception&) {
    s = "<unprintable>";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

const char* json_type(const json& v) { return v.type_name(); }

std::string show_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Reads a non-negative JSON integer that fits in uint64; false if `v` is anything else.
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = uint64_t(x);
    return true;
  }
  return false;
}

// Records duplicate keys, which nlohmann::json would otherwise silently collapse.
struct DuplicateKeyFinder {
  std::vector<std::set<std::string>> open_objects;
  std::string current_tensor;  // last top-level key seen
  std::string duplicate;       // first duplicate key found, with its context
  bool found = false;

  bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (open_objects.size() == 1) current_tensor = key;
          if (!open_objects.back().insert(key).second && !found) {
            found = true;
            duplicate = open_objects.size() == 1
                            ? str_cat("duplicate key '", key, "'")
                            : str_cat("entry '", current_tensor, "': duplicate key '", key, "'");
          }
        }
        break;
      default:
        break;
    }
    return true;
  }
};

struct Span {
  uint64_t begin, end;
  const std::string* name;
};

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  const DtypeInfo* d = find_dtype(dtype);
  BS_CHECK(d, "unknown safetensors dtype '", dtype, "' (known: ", known_dtypes(), ")");
  return d->size;
}

bool is_safetensors_dtype(const std::string& dtype) { return find_dtype(dtype) != nullptr; }

int64_t TensorView::numel() const {
  // The reader guarantees the product fits unless a dimension is zero.
  for (int64_t d : shape)
    if (d == 0) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorView& SafeTensors::get(const std::string& tensor) const {
  auto it = tensors_.find(tensor);
  BS_CHECK(it != tensors_.end(), "safetensors '", source_, "': no tensor named '", tensor, "'");
  return it->second;
}

const TensorView& SafeTensors::get(const std::string& tensor, const std::string& dtype) const {
  const TensorView& v = get(tensor);
  BS_CHECK(v.dtype == dtype, "safetensors '", source_, "': tensor '", tensor, "' has dtype ", v.dtype,
           ", expected ", dtype);
  return v;
}

const TensorView& SafeTensors::get(const std::string& tensor, const std::string& dtype,
                                   const std::vector<int64_t>& shape) const {
  const TensorView& v = get(tensor, dtype);
  BS_CHECK(v.shape == shape, "safetensors '", source_, "': tensor '", tensor, "' has shape ",
           show_shape(v.shape), ", expected ", show_shape(shape));
  return v;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const std::string& SafeTensors::metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  BS_CHECK(it != metadata_.end(), "safetensors '", source_, "': no __metadata__ entry '", key, "'");
  return it->second;
}

SafeTensors parse_safetensors(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  const std::string where = str_cat("safetensors '", name_for_errors, "': ");
  BS_CHECK(size >= 8 && data != nullptr, where, "file is ", size,
           " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  const uint64_t after = uint64_t(size) - 8;
  BS_CHECK(header_len <= kMaxHeaderBytes, where, "header length ", header_len,
           " is absurd (limit ", kMaxHeaderBytes, " bytes)");
  BS_CHECK(header_len <= after, where, "header length ", header_len, " exceeds the ", after,
           " bytes that follow it");

  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  const char* hend = hbegin + header_len;
  // nlohmann::json stops at a NUL byte as if the input ended; JSON text never contains one.
  if (const void* nul = std::memchr(hbegin, 0, size_t(header_len)))
    fail(where, "header is not valid JSON: NUL byte at header offset ",
         static_cast<const char*>(nul) - hbegin);
  json header;
  DuplicateKeyFinder dups;
  try {
    header = json::parse(hbegin, hend, std::ref(dups), /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    fail(where, "header is not valid JSON: ", e.what());
  }
  BS_CHECK(!dups.found, where, "header has a ", dups.duplicate);
  BS_CHECK(header.is_object(), where, "header must be a JSON object, got ", json_type(header));

  const uint8_t* buffer = data + 8 + header_len;
  const uint64_t buffer_size = after - header_len;

  SafeTensors out;
  out.source_ = name_for_errors;
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == kMetadataKey) {
      BS_CHECK(entry.is_object(), where, "__metadata__ must be an object of strings, got ",
               json_type(entry));
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        BS_CHECK(m.value().is_string(), where, "__metadata__ entry '", m.key(),
                 "' must be a string, got ", json_type(m.value()), " ", show(m.value()));
        out.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    BS_CHECK(!name.empty(), where, "a tensor has an empty name");
    const std::string at = str_cat(where, "tensor '", name, "': ");
    BS_CHECK(entry.is_object(), at, "entry must be an object, got ", json_type(entry), " ",
             show(entry));
    for (auto f = entry.begin(); f != entry.end(); ++f)
      BS_CHECK(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets", at,
               "unknown field '", f.key(), "'");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      BS_CHECK(entry.contains(field), at, "missing field '", field, "'");

    TensorView view;
    const json& dtype = entry["dtype"];
    BS_CHECK(dtype.is_string(), at, "dtype must be a string, got ", json_type(dtype), " ",
             show(dtype));
    view.dtype = dtype.get<std::string>();
    const DtypeInfo* info = find_dtype(view.dtype);
    BS_CHECK(info, at, "unknown dtype '", view.dtype, "' (known: ", known_dtypes(), ")");

    const json& shape = entry["shape"];
    BS_CHECK(shape.is_array(), at, "shape must be a list of non-negative integers, got ",
             json_type(shape), " ", show(shape));
    uint64_t numel = 1;
    bool numel_overflow = false, has_zero = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      uint64_t d = 0;
      BS_CHECK(as_u64(shape[i], &d) && d <= uint64_t(std::numeric_limits<int64_t>::max()), at,
               "shape[", i, "] = ", show(shape[i]), " is not a non-negative integer");
      view.shape.push_back(int64_t(d));
      if (d == 0) has_zero = true;
      if (__builtin_mul_overflow(numel, d, &numel)) numel_overflow = true;
    }
    if (has_zero) numel = 0, numel_overflow = false;  // a zero dimension makes the product exact
    BS_CHECK(!numel_overflow && numel <= uint64_t(std::numeric_limits<int64_t>::max()), at,
             "element count of shape ", show(shape), " overflows 64 bits");
    uint64_t expected_bytes = 0;
    BS_CHECK(!__builtin_mul_overflow(numel, uint64_t(info->size), &expected_bytes), at,
             "byte size of shape ", show(shape), " x ", info->size, " bytes overflows 64 bits");

    const json& offsets = entry["data_offsets"];
    uint64_t begin = 0, end = 0;
    BS_CHECK(offsets.is_array() && offsets.size() == 2 && as_u64(offsets[0], &begin) &&
                 as_u64(offsets[1], &end),
             at, "data_offsets must be two non-negative integers [begin, end], got ",
             show(offsets));
    BS_CHECK(begin <= end, at, "data_offsets begin ", begin, " > end ", end);
    BS_CHECK(end <= buffer_size, at, "data_offsets end ", end, " is beyond the data buffer of ",
             buffer_size, " bytes");
    BS_CHECK(end - begin == expected_bytes, at, "data_offsets span ", end - begin,
             " bytes but shape ", show_shape(view.shape), " of ", view.dtype, " needs ",
             expected_bytes, " bytes");
    view.data = buffer + begin;
    view.nbytes = size_t(end - begin);
    auto ins = out.tensors_.emplace(name, std::move(view));
    spans.push_back({begin, end, &ins.first->first});
  }

  // The tensors must tile the buffer: no overlap, no hole, nothing after the last one.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin < covered)
      fail(where, "tensors '", *prev->name, "' [", prev->begin, ", ", prev->end, ") and '",
           *s.name, "' [", s.begin, ", ", s.end, ") overlap");
    BS_CHECK(s.begin == covered, where, "bytes [", covered, ", ", s.begin,
             ") of the data buffer belong to no tensor (hole before '", *s.name, "')");
    covered = s.end;
    prev = &s;
  }
  BS_CHECK(covered == buffer_size, where, "bytes [", covered, ", ", buffer_size,
           ") at the end of the data buffer belong to no tensor");
  return out;
}

SafeTensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BS_CHECK(in, "cannot open safetensors file '", path, "': ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff len = in.tellg();
  BS_CHECK(len >= 0, "cannot determine the size of '", path, "'");
  in.seekg(0, std::ios::beg);
  auto bytes = std::make_shared<std::vector<uint8_t>>(size_t(len));
  if (len > 0) in.read(reinterpret_cast<char*>(bytes->data()), len);
  BS_CHECK(in && in.gcount() == len, "failed reading ", len, " bytes of '", path, "'");
  SafeTensors st = parse_safetensors(bytes->data(), bytes->size(), path);
  st.storage_ = std::move(bytes);
  return st;
}

TensorToWrite make_tensor(const std::string& name, const std::string& dtype,
                          const std::vector<int64_t>& shape, const void* data, size_t nbytes) {
  TensorToWrite t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  const auto* p = static_cast<const uint8_t*>(data);
  if (nbytes) t.bytes.assign(p, p + nbytes);
  return t;
}

namespace {

// Validates the tensors and builds the padded header; `order` is the data layout order.
std::string plan_file(const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata,
                      std::vector<const TensorToWrite*>* order) {
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    const std::string at = str_cat("safetensors writer: tensor '", t.name, "': ");
    BS_CHECK(!t.name.empty(), "safetensors writer: empty tensor name");
    BS_CHECK(t.name != kMetadataKey, at, "name is reserved for metadata");
    BS_CHECK(seen.insert(t.name).second, at, "duplicate tensor name");
    const DtypeInfo* info = find_dtype(t.dtype);
    BS_CHECK(info, at, "unknown dtype '", t.dtype, "' (known: ", known_dtypes(), ")");
    uint64_t n = 1;
    for (size_t i = 0; i < t.shape.size(); ++i)
      BS_CHECK(t.shape[i] >= 0, at, "shape[", i, "] = ", t.shape[i], " is negative");
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      n = 0;
    } else {
      for (int64_t d : t.shape)
        BS_CHECK(!__builtin_mul_overflow(n, uint64_t(d), &n) &&
                     n <= uint64_t(std::numeric_limits<int64_t>::max()),
                 at, "element count of shape ", show_shape(t.shape), " overflows");
    }
    uint64_t nbytes = 0;
    BS_CHECK(!__builtin_mul_overflow(n, uint64_t(info->size), &nbytes) && nbytes == t.bytes.size(),
             at, "has ", t.bytes.size(), " bytes but shape ", show_shape(t.shape), " of ", t.dtype,
             " needs ", n, " x ", info->size);
    order->push_back(&t);
  }
  std::stable_sort(order->begin(), order->end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    const size_t sa = find_dtype(a->dtype)->size, sb = find_dtype(b->dtype)->size;
    return sa != sb ? sa > sb : a->name < b->name;
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const TensorToWrite* t : *order) {
    const uint64_t end = offset + t->bytes.size();
    header[t->name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail("safetensors writer: a tensor name or metadata string is not valid UTF-8: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void put_u64_le(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = uint8_t(v >> (8 * i));
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  const std::string header = plan_file(tensors, metadata, &order);
  size_t total = 8 + header.size();
  for (const auto* t : order) total += t->bytes.size();
  std::vector<uint8_t> out(total);
  put_u64_le(header.size(), out.data());
  std::memcpy(out.data() + 8, header.data(), header.size());
  size_t pos = 8 + header.size();
  for (const auto* t : order) {
    if (!t->bytes.empty()) std::memcpy(out.data() + pos, t->bytes.data(), t->bytes.size());
    pos += t->bytes.size();
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  const std::string header = plan_file(tensors, metadata, &order);
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    BS_CHECK(out, "cannot open '", tmp, "' for writing: ", std::strerror(errno));
    uint8_t len[8];
    put_u64_le(header.size(), len);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const auto* t : order)
      out.write(reinterpret_cast<const char*>(t->bytes.data()), std::streamsize(t->bytes.size()));
    out.flush();
    BS_CHECK(out, "failed writing safetensors file '", tmp, "': ", std::strerror(errno));
  });
}

}  // namespace bitswitch::format
