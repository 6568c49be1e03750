// Bit configurations and bit lists (SPEC.md Sec. 4, 6).
#include "bitswitch/nn/bit_config.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bitswitch/quant/double_rounding.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"
#include "bitswitch/util/parse.h"

namespace bitswitch::nn {

namespace {
void check_width(int bits, const std::string& what) {
  BS_CHECK(bits == kFloatBits || (bits >= quant::kMinBits && bits <= quant::kMaxBits),
           what, ": width ", bits, " is outside [", quant::kMinBits, ", ", quant::kMaxBits, "]");
}
}  // namespace

BitConfig BitConfig::uniform(int bits) {
  check_width(bits, "bit config");
  BitConfig c;
  c.default_bits_ = bits;
  return c;
}

BitConfig BitConfig::per_layer(std::map<std::string, LayerBits> layers, int default_bits) {
  BitConfig c = uniform(default_bits);
  for (const auto& [name, b] : layers) {
    check_width(b.weight, "layer '" + name + "' weight");
    check_width(b.act, "layer '" + name + "' activation");
  }
  c.overrides_ = std::move(layers);
  return c;
}

LayerBits BitConfig::for_layer(const std::string& name) const {
  auto it = overrides_.find(name);
  if (it != overrides_.end()) return it->second;
  return {default_bits_, default_bits_};
}

std::string width_label(int bits) { return bits == kFloatBits ? "fp32" : "w" + std::to_string(bits); }

std::string bn_key(int prev_bits, int bits) {
  if (bits == kFloatBits) return "fp";
  if (prev_bits == 0 || prev_bits == kFloatBits || prev_bits == bits) return std::to_string(bits);
  return std::to_string(prev_bits) + "_" + std::to_string(bits);
}

std::map<std::string, int> parse_layer_bits(const std::string& json_text, const std::string& source,
                                            const std::vector<int>& allowed) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  BS_CHECK(j.is_object(), source, ": expected a JSON object mapping layer names to widths");
  BS_CHECK(!j.empty(), source, ": no layers");
  std::map<std::string, int> out;
  for (const auto& [name, v] : j.items()) {
    BS_CHECK(v.is_number_integer(), source, ": layer '", name, "': width ", v.dump(), " is not an integer");
    const int b = v.get<int>();
    BS_CHECK(b >= 2 && b <= 8, source, ": layer '", name, "': width ", b, " is outside [2, 8]");
    if (!allowed.empty())
      BS_CHECK(std::find(allowed.begin(), allowed.end(), b) != allowed.end(), source, ": layer '", name,
               "': width ", b, " is not in the bit list ", format_bit_list(allowed));
    out[name] = b;
  }
  return out;
}

std::map<std::string, int> read_layer_bits(const std::string& path, const std::vector<int>& allowed) {
  return parse_layer_bits(read_text_file(path), "'" + path + "'", allowed);
}

std::string layer_bits_to_json(const std::map<std::string, int>& layers) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, b] : layers) j[name] = b;
  return j.dump(2) + "\n";
}

BitConfig layer_bits_config(const std::map<std::string, int>& layers, int default_bits) {
  std::map<std::string, LayerBits> m;
  for (const auto& [name, b] : layers) m[name] = LayerBits{b, b};
  return BitConfig::per_layer(std::move(m), default_bits);
}

std::string BitConfig::label() const { return is_uniform() ? width_label(default_bits_) : "mixed"; }

std::vector<int> check_bit_list(std::vector<int> bits, const std::string& what) {
  BS_CHECK(!bits.empty(), what, ": the bit list is empty");
  for (int b : bits)
    BS_CHECK(b >= quant::kMinBits && b <= quant::kMaxBits, what, ": bit-width ", b,
             " is outside [", quant::kMinBits, ", ", quant::kMaxBits, "]");
  std::sort(bits.begin(), bits.end(), std::greater<int>());
  for (size_t i = 1; i < bits.size(); ++i)
    BS_CHECK(bits[i] != bits[i - 1], what, ": bit-width ", bits[i], " appears more than once");
  return bits;
}

std::vector<int> parse_bit_list(const std::string& text, const std::string& what) {
  std::vector<int> bits;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto v = parse_integer(item);
    BS_CHECK(v && *v >= INT32_MIN && *v <= INT32_MAX, what, ": '", item, "' in '", text,
             "' is not an integer bit-width");
    bits.push_back(static_cast<int>(*v));
  }
  return check_bit_list(std::move(bits), what);
}

std::string format_bit_list(const std::vector<int>& bits) {
  std::string s;
  for (size_t i = 0; i < bits.size(); ++i) s += (i ? "," : "") + std::to_string(bits[i]);
  return s;
}

}  // namespace bitswitch::nn
