// Strict integer parsing for user text (flags, environment variables, lists): the whole text
// must be an integer, with no exceptions escaping to callers, which report their own errors.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace bitswitch {

inline std::optional<int64_t> parse_integer(const std::string& text) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != text.size()) return std::nullopt;
  return static_cast<int64_t>(v);
}

}  // namespace bitswitch
