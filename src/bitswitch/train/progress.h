// Progress reporting for long loops: a redrawn bar with rate and ETA on a terminal,
// plain periodic lines otherwise (logs, CI). Written by hand: Debian packages no C++ progress bar.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace bitswitch::train {

class Progress {
 public:
  // `interval_s`: seconds between plain lines when `out` is not a terminal; `out` null: silent.
  Progress(std::string label, int64_t total, double interval_s = 10.0, std::FILE* out = stderr);
  // Marks `done` units complete; `status` is shown after the counters (e.g. the loss).
  void update(int64_t done, const std::string& status = "");
  // Prints the final line.
  void finish(const std::string& status = "");
  double elapsed() const;

 private:
  void draw(int64_t done, const std::string& status, bool final);
  std::string label_;
  int64_t total_;
  double interval_;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

// "1:02:03" / "02:03".
std::string format_duration(double seconds);

}  // namespace bitswitch::train
