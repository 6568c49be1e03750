// Progress bar / periodic progress lines.
#include "bitswitch/train/progress.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

namespace bitswitch::train {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

Progress::Progress(std::string label, int64_t total, double interval_s, std::FILE* out)
    : label_(std::move(label)), total_(total), interval_(interval_s), out_(out),
      tty_(out && ::isatty(::fileno(out)) != 0), start_(std::chrono::steady_clock::now()), last_(start_) {}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& status) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.1 : interval_) || (!tty_ && done >= total_)) return;
  last_ = now;
  draw(done, status, false);
}

void Progress::finish(const std::string& status) { draw(total_, status, true); }

void Progress::draw(int64_t done, const std::string& status, bool final) {
  if (!out_) return;
  const double t = elapsed();
  const double rate = t > 0 ? done / t : 0.0;
  const double eta = rate > 0 ? (total_ - done) / rate : NAN;
  const double frac = total_ > 0 ? double(done) / total_ : 1.0;
  if (tty_) {
    const int width = 28, filled = static_cast<int>(frac * width);
    std::string bar(filled, '=');
    if (filled < width) bar += '>' + std::string(width - filled - 1, ' ');
    fmt::print(out_, "\r\033[K{} [{}] {}/{} {:.1f} it/s {} ETA {} {}", label_, bar, done, total_, rate,
               format_duration(t), final ? "00:00" : format_duration(eta), status);
    if (final) fmt::print(out_, "\n");
  } else {
    fmt::print(out_, "{} {}/{} ({:.0f}%) {:.1f} it/s elapsed {} ETA {} {}\n", label_, done, total_,
               100 * frac, rate, format_duration(t), final ? "00:00" : format_duration(eta), status);
  }
  std::fflush(out_);
}

}  // namespace bitswitch::train
