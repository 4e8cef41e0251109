#include "writers/output.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "ocr/errors.h"

namespace ocr {

namespace {

std::string lower_ext(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string e = name.substr(dot + 1);
  std::transform(e.begin(), e.end(), e.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& dir) {
  if (dir.empty() || is_dir(dir)) return;
  const auto slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0777) == 0) return;
  const int err = errno;
  if (is_dir(dir)) return;  // made by another process meanwhile
  if (err == EEXIST)
    throw WriteError(dir + ": cannot create folder (a file of that name is in the way)", ENOTDIR);
  throw WriteError(dir + ": cannot create folder (" + std::strerror(err) + ")", err);
}

// Writes all of `data`; false with errno set on failure (EINTR retried, short writes continued).
bool write_all(int fd, const char* p, size_t left) {
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {
      errno = EIO;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

// FNV-1a: names the lock file of an output path (the path itself may be long or hold any byte).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Wall-clock time in the coarse resolution file timestamps have, taken when the program starts.
int64_t coarse_now_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
const int64_t g_process_start_ns = coarse_now_ns();

// Deletes out_path.tmp.<pid> files (write_file_atomic's) beside out_path.
void remove_temporaries(const std::string& out_path) {
  const auto slash = out_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : out_path.substr(0, slash);
  const std::string prefix = out_path.substr(slash == std::string::npos ? 0 : slash + 1) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() > prefix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
        n.find_first_not_of("0123456789", prefix.size()) == std::string::npos)
      ::unlinkat(::dirfd(d), n.c_str(), 0);
  }
  ::closedir(d);
}

// kDone test of OutputClaim::take: the output exists (without --force), or was written after this
// process started (with --force: another --force run did it meanwhile).
bool output_done(const std::string& path, bool force) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  if (!force) return true;
  return int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec >= g_process_start_ns;
}

// Recursive walk with lstat: symbolic links are never followed (no loops, no escapes).
void walk(const std::string& root, const std::string& rel, std::vector<InputFile>& out,
          std::vector<std::string>& errors) {
  const std::string dir = rel.empty() ? root : root + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    errors.push_back(dir + ": cannot read folder (" + std::strerror(errno) + ")");
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  const auto& exts = input_extensions();
  for (const auto& n : names) {
    const std::string r = rel.empty() ? n : rel + "/" + n;
    struct stat st {};
    if (::lstat((root + "/" + r).c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(root, r, out, errors);
    } else if (S_ISREG(st.st_mode) &&
               std::find(exts.begin(), exts.end(), lower_ext(n)) != exts.end()) {
      out.push_back({root + "/" + r, r});
    }
  }
}

}  // namespace

const std::vector<std::string>& input_extensions() {
  static const std::vector<std::string> kExt = {"png",  "jpg", "jpeg", "tif",
                                                "tiff", "bmp", "webp", "pdf"};
  return kExt;
}

std::vector<InputFile> expand_inputs(const std::vector<std::string>& args,
                                     std::vector<std::string>& errors) {
  std::vector<InputFile> out;
  for (const auto& a : args) {
    if (a != "-" && is_dir(a)) {
      std::string root = a;
      while (root.size() > 1 && root.back() == '/') root.pop_back();
      walk(root, "", out, errors);
    } else {
      const auto slash = a.rfind('/');
      out.push_back({a, a == "-" ? std::string("stdin")
                                 : (slash == std::string::npos ? a : a.substr(slash + 1))});
    }
  }
  return out;
}

std::string output_path(const std::string& out_dir, const std::string& relative,
                        const std::string& ext) {
  std::string clean;
  size_t start = 0;
  while (start <= relative.size()) {
    size_t end = relative.find('/', start);
    if (end == std::string::npos) end = relative.size();
    const std::string part = relative.substr(start, end - start);
    if (!part.empty() && part != "." && part != "..") clean += (clean.empty() ? "" : "/") + part;
    start = end + 1;
  }
  if (clean.empty()) clean = "output";
  const auto slash = clean.rfind('/');
  const auto dot = clean.rfind('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash + 1))
    clean.resize(dot);
  return out_dir + "/" + clean + "." + ext;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) make_dirs(path.substr(0, slash));
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    throw WriteError(path + ": cannot write (" + std::strerror(err) + ")", err);
  }
  int err = 0;
  if (!write_all(fd, content.data(), content.size())) err = errno;
  // A full disk may only show at fsync or close (delayed allocation, NFS): both are checked.
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw WriteError(path + ": cannot write (" + std::strerror(err) + ")", err);
  }
}

void append_line(const std::string& path, const std::string& line) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) make_dirs(path.substr(0, slash));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    throw WriteError(path + ": cannot append (" + std::strerror(err) + ")", err);
  }
  const std::string data = line + "\n";
  const ssize_t n = ::write(fd, data.data(), data.size());
  int err = n < 0 ? errno : 0;
  if (::close(fd) != 0 && !err) err = errno;
  if (err || n != static_cast<ssize_t>(data.size())) {
    if (!err) err = ENOSPC;  // a short write on a regular file: the file system filled up
    throw WriteError(path + ": cannot append (" + std::strerror(err) + ")", err);
  }
}

bool WriteError::device_full() const {
  return error_number_ == ENOSPC || error_number_ == EDQUOT || error_number_ == EROFS;
}

void prepare_output_dir(const std::string& out_dir) {
  make_dirs(out_dir);
  const std::string probe = out_dir + "/.ocr-cli.probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    throw WriteError(out_dir + ": output folder is not writable (" + std::strerror(err) + ")", err);
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

void mark_output_conflicts(std::vector<InputFile>& files, const std::string& out_dir,
                           const std::string& ext) {
  // Hashes, not paths, are kept (8 bytes an input at 100,000 inputs); a hash match is confirmed on
  // the paths themselves, so a collision of hashes alone never reports a conflict.
  std::unordered_map<uint64_t, size_t> first;
  first.reserve(files.size());
  for (size_t k = 0; k < files.size(); ++k) {
    const std::string out = output_path(out_dir, files[k].relative, ext);
    const auto [it, inserted] = first.emplace(fnv1a(out), k);
    if (!inserted && output_path(out_dir, files[it->second].relative, ext) == out)
      files[k].conflict = files[it->second].path;
  }
}

std::string one_line(const std::string& text) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

OutputClaim OutputClaim::take(const std::string& out_dir, const std::string& out_path, bool force) {
  if (output_done(out_path, force)) return OutputClaim(State::kDone, -1, "", "");
  const std::string lock_dir = out_dir + "/.ocr-cli.locks";
  char name[32];
  std::snprintf(name, sizeof name, "/%016llx.lock",
                static_cast<unsigned long long>(fnv1a(out_path)));
  const std::string lock = lock_dir + name;
  // Retried when the lock file or folder is deleted under us by a process releasing its claim.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    make_dirs(lock_dir);
    // Empty lock files: a claim needs no data blocks, so it works on a full disk.
    bool created = true;
    int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) {
      created = false;
      fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) continue;  // the lock file or folder was removed meanwhile
      throw WriteError(
          out_path + ": cannot claim (" + std::strerror(err) + ", lock file " + lock + ")", err);
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) return OutputClaim(State::kBusy, -1, "", "");
      if (err == EINTR) continue;
      throw WriteError(
          out_path + ": cannot claim (" + std::strerror(err) + ", lock file " + lock + ")", err);
    }
    // The holder we waited on may have deleted the file before unlocking it: then we locked a
    // deleted file and must start over on the path's current file.
    struct stat held {
    }, now{};
    if (::fstat(fd, &held) != 0 || ::stat(lock.c_str(), &now) != 0 || held.st_ino != now.st_ino ||
        held.st_dev != now.st_dev) {
      ::close(fd);
      continue;
    }
    OutputClaim claim(State::kHeld, fd, lock, lock_dir);
    // A release deletes the lock file, so one we found in place and could lock was left by a
    // process that died holding the claim (killed mid-write at worst): its temporary file is
    // garbage. Rare, so the folder scan costs nothing in a normal run.
    if (!created) remove_temporaries(out_path);
    // Another process may have finished this output between our first look and the claim.
    if (output_done(out_path, force)) {
      claim.release();
      claim.state_ = State::kDone;
    }
    return claim;
  }
  throw WriteError(out_path + ": cannot claim (lock file " + lock + " keeps being replaced)",
                   EAGAIN);
}

OutputClaim::OutputClaim(OutputClaim&& other) noexcept
    : state_(other.state_),
      fd_(other.fd_),
      lock_path_(std::move(other.lock_path_)),
      lock_dir_(std::move(other.lock_dir_)) {
  other.fd_ = -1;
}

OutputClaim& OutputClaim::operator=(OutputClaim&& other) noexcept {
  if (this != &other) {
    release();
    state_ = other.state_;
    fd_ = other.fd_;
    lock_path_ = std::move(other.lock_path_);
    lock_dir_ = std::move(other.lock_dir_);
    other.fd_ = -1;
  }
  return *this;
}

OutputClaim::~OutputClaim() { release(); }

void OutputClaim::release() {
  if (fd_ < 0) return;
  // Delete, then unlock: whoever locks the old file afterwards sees it was deleted and retries.
  ::unlink(lock_path_.c_str());
  ::close(fd_);
  fd_ = -1;
  ::rmdir(lock_dir_.c_str());  // fails harmlessly while other claims are held
}

}  // namespace ocr
