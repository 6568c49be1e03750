// Crash-safe file output: write to `path.tmp.<pid>`, fsync, then rename over `path`.
// A reader never sees a half-written checkpoint or export; the old file survives a failure.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace bitswitch {

// Calls `write(tmp_path)` to produce the file, then atomically renames it to `path`.
// On any exception the temporary file is removed and the exception propagates.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

// Writes `text` to `path` atomically.
void write_text_atomically(const std::string& path, const std::string& text);

// Rewrites `path` (atomically) with only its first `lines` lines; a missing file becomes an
// empty one. Resumed runs use it to drop the metrics lines logged after their checkpoint.
void keep_first_lines(const std::string& path, int64_t lines);

// Reads a whole file; throws bitswitch::Error naming the path if it cannot.
std::string read_text_file(const std::string& path);

}  // namespace bitswitch
