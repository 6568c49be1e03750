// Typed, range-checked reads of fields of a JSON object, for metadata of files we read (the
// deployment artifact's layers/graph/bns). Every number is checked as JSON (integer or not,
// signed or unsigned, in range) before it is converted, so no conversion can overflow: a value
// such as 922337203685477580716, which nlohmann parses as a float, is an error naming the field,
// not a float-to-integer conversion with undefined behaviour.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "bitswitch/util/error.h"

namespace bitswitch::format {

// `j` must be an object holding `key`; `where` prefixes errors ("model.safetensors: layer 'fc'").
inline const nlohmann::json& json_member(const nlohmann::json& j, const std::string& key, const std::string& where) {
  BS_CHECK(j.is_object(), where, ": expected a JSON object, got ", j.dump());
  const auto it = j.find(key);
  BS_CHECK(it != j.end(), where, ": missing field '", key, "'");
  return *it;
}

// An integer value in [lo, hi]; `what` names it in errors ("field 'in'").
inline int64_t json_to_int(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& where,
                           const std::string& what) {
  BS_CHECK(v.is_number_integer(), where, ": ", what, " must be an integer, got ", v.dump());
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    BS_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), where, ": ", what, " = ", u, " is outside [", lo,
             ", ", hi, "]");
    x = int64_t(u);
  } else {
    x = v.get<int64_t>();
  }
  BS_CHECK(x >= lo && x <= hi, where, ": ", what, " = ", x, " is outside [", lo, ", ", hi, "]");
  return x;
}

inline int64_t json_int(const nlohmann::json& j, const std::string& key, int64_t lo, int64_t hi,
                        const std::string& where) {
  return json_to_int(json_member(j, key, where), lo, hi, where, "field '" + key + "'");
}

// A finite number (integer or float) in [lo, hi].
inline double json_number(const nlohmann::json& j, const std::string& key, double lo, double hi,
                          const std::string& where) {
  const auto& v = json_member(j, key, where);
  BS_CHECK(v.is_number(), where, ": field '", key, "' must be a number, got ", v.dump());
  const double x = v.get<double>();
  BS_CHECK(std::isfinite(x) && x >= lo && x <= hi, where, ": field '", key, "' = ", x, " is outside [", lo, ", ", hi,
           "]");
  return x;
}

inline bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& where) {
  const auto& v = json_member(j, key, where);
  BS_CHECK(v.is_boolean(), where, ": field '", key, "' must be true or false, got ", v.dump());
  return v.get<bool>();
}

inline std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& where) {
  const auto& v = json_member(j, key, where);
  BS_CHECK(v.is_string(), where, ": field '", key, "' must be a string, got ", v.dump());
  return v.get<std::string>();
}

}  // namespace bitswitch::format
