// Error type and argument checks shared by every bitswitch module.
// Messages name the file, field or value at fault, so that a user can fix the input.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace bitswitch {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace error_detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace error_detail

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  error_detail::append(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

}  // namespace bitswitch

// BS_CHECK(cond, "`bits` must be in [2, 8], got ", bits): throws bitswitch::Error.
#define BS_CHECK(cond, ...)                   \
  do {                                        \
    if (!(cond)) ::bitswitch::fail(__VA_ARGS__); \
  } while (0)
