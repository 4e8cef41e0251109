// Where results go: input expansion (folders walked), output paths mirrored under -o DIR and kept
// inside it, per-output claims between processes, atomic file writes, append-only failure logs.
// POSIX calls only (see parity.cpp on libtorch's std::filesystem copies).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "ocr/errors.h"

namespace ocr {

struct InputFile {
  std::string path;      // as opened ("-" for stdin)
  std::string relative;  // path relative to the argument it came from (mirrored under -o DIR)
  std::string conflict;  // set by mark_output_conflicts: the earlier input with the same output
};

// A failed write under -o DIR, with the errno behind it.
class WriteError : public InputError {
 public:
  WriteError(const std::string& what, int error_number)
      : InputError(what), error_number_(error_number) {}
  int error_number() const { return error_number_; }
  // The file system is full or read-only (ENOSPC, EDQUOT, EROFS): every later output would fail
  // the same way, so a batch stops rather than compute pages it cannot keep.
  bool device_full() const;

 private:
  int error_number_;
};

// File extensions taken from folders (lower case, without the dot).
const std::vector<std::string>& input_extensions();

// Files are kept as given; folders are walked recursively without following symbolic links, keeping
// files with an input extension, sorted bytewise (a stable order). Unreadable folders go to errors.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& args,
                                     std::vector<std::string>& errors);

// out_dir/relative with its extension replaced by `ext`; "..", "." and empty components and any
// leading "/" are dropped, so no input name can point outside out_dir.
std::string output_path(const std::string& out_dir, const std::string& relative,
                        const std::string& ext);

bool path_exists(const std::string& path);

// Inputs whose output path equals an earlier input's (x.png and x.pdf in one folder, or two files
// of the same name given from different folders) get `conflict` set to that earlier input's path:
// without this the later one would be skipped as "already done" and its text silently lost.
// Run it before sharding so that every shard agrees on which input keeps the name.
void mark_output_conflicts(std::vector<InputFile>& files, const std::string& out_dir,
                           const std::string& ext);

// Creates `out_dir` and checks that a file can be created in it, so that an unwritable -o fails at
// once instead of after the first page's inference. Throws WriteError naming the folder.
void prepare_output_dir(const std::string& out_dir);

// `text` with control characters escaped (\n, \r, \t, \xNN), so that an error naming a file
// whose name holds a newline still takes exactly one line.
std::string one_line(const std::string& text);

// The claim of one output by this process. Two processes on one -o DIR (an accidental double run,
// overlapping shards) never work on the same output: the claim is an flock() on
// DIR/.ocr-cli.locks/<hash of the output path>.lock (an empty file: claims work on a full disk),
// which the kernel drops if the process dies; the next claimant then deletes the dead process's
// temporary file. Releasing (destructor) deletes the lock file, and the lock folder once empty.
class OutputClaim {
 public:
  enum class State {
    kHeld,  // this process writes the output
    kBusy,  // another live process holds the claim: skip the input
    kDone,  // the output exists (made by another process meanwhile): skip the input
  };
  // Takes the claim of `out_path` (a path under `out_dir`) without waiting. kDone when the output
  // exists, or with `force` when it was written after this process started (by another --force
  // run). Throws WriteError when the lock file cannot be created.
  static OutputClaim take(const std::string& out_dir, const std::string& out_path, bool force);

  OutputClaim(OutputClaim&& other) noexcept;
  OutputClaim& operator=(OutputClaim&& other) noexcept;  // releases the claim held before
  OutputClaim(const OutputClaim&) = delete;
  ~OutputClaim();

  State state() const { return state_; }

 private:
  OutputClaim(State state, int fd, std::string lock_path, std::string lock_dir)
      : state_(state), fd_(fd), lock_path_(std::move(lock_path)), lock_dir_(std::move(lock_dir)) {}
  void release();

  State state_;
  int fd_;
  std::string lock_path_;
  std::string lock_dir_;
};

// Writes `content` to a temporary file beside `path` (path.tmp.<pid>), flushes it to disk and
// renames it over `path`, creating parent folders. Every write, fsync and close is checked; on
// failure the temporary file is removed and WriteError names the path and the reason (No space
// left on device, Permission denied, ...).
void write_file_atomic(const std::string& path, const std::string& content);

// Appends one line (a newline is added) with a single write on an O_APPEND descriptor, so
// concurrent writers do not interleave within a line.
void append_line(const std::string& path, const std::string& line);

}  // namespace ocr
