// Where results go: input expansion (folders walked), output paths mirrored under -o DIR and kept
// inside it, atomic file writes, append-only failure logs. POSIX calls only (see parity.cpp on
// libtorch's std::filesystem copies).
#pragma once

#include <string>
#include <vector>

namespace ocr {

struct InputFile {
  std::string path;      // as opened ("-" for stdin)
  std::string relative;  // path relative to the argument it came from (mirrored under -o DIR)
};

// File extensions taken from folders (lower case, without the dot).
const std::vector<std::string>& input_extensions();

// Files are kept as given; folders are walked recursively without following symbolic links, keeping
// files with an input extension, sorted bytewise (a stable order). Unreadable folders go to errors.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& args, std::vector<std::string>& errors);

// out_dir/relative with its extension replaced by `ext`; "..", "." and empty components and any
// leading "/" are dropped, so no input name can point outside out_dir.
std::string output_path(const std::string& out_dir, const std::string& relative, const std::string& ext);

bool path_exists(const std::string& path);

// Writes `content` to a temporary file beside `path`, flushes it to disk and renames it over
// `path`, creating parent folders. On failure the temporary file is removed and ocr::InputError
// names the path and the reason (disk full, permission denied, ...).
void write_file_atomic(const std::string& path, const std::string& content);

// Appends one line (a newline is added) with a single write on an O_APPEND descriptor, so
// concurrent writers do not interleave within a line.
void append_line(const std::string& path, const std::string& line);

}  // namespace ocr
