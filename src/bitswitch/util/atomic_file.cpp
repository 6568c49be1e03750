#include "bitswitch/util/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bitswitch/util/error.h"

namespace bitswitch {

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write(tmp);
    int fd = ::open(tmp.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      fail("cannot rename '", tmp, "' to '", path, "': ", std::strerror(errno));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    BS_CHECK(out, "cannot open '", tmp, "' for writing: ", std::strerror(errno));
    out << text;
    out.flush();
    BS_CHECK(out, "failed writing '", tmp, "'");
  });
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BS_CHECK(in, "cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void keep_first_lines(const std::string& path, int64_t lines) {
  std::string text, l;
  {
    std::ifstream in(path);
    for (int64_t n = 0; n < lines && std::getline(in, l); ++n) text += l + "\n";
  }
  write_text_atomically(path, text);
}

}  // namespace bitswitch
