// Bit configurations and bit lists (SPEC.md Sec. 4, 6).
#include "bitswitch/nn/bit_config.h"

#include <algorithm>
#include <sstream>

#include "bitswitch/quant/double_rounding.h"
#include "bitswitch/util/error.h"

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
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BS_CHECK(used > 0 && used == item.size(), what, ": '", item, "' in '", text,
             "' is not an integer bit-width");
    bits.push_back(v);
  }
  return check_bit_list(std::move(bits), what);
}

std::string format_bit_list(const std::vector<int>& bits) {
  std::string s;
  for (size_t i = 0; i < bits.size(); ++i) s += (i ? "," : "") + std::to_string(bits[i]);
  return s;
}

}  // namespace bitswitch::nn
