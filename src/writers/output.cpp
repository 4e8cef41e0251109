#include "writers/output.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include "ocr/errors.h"

namespace ocr {

namespace {

std::string lower_ext(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string e = name.substr(dot + 1);
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool is_dir(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& dir) {
  if (dir.empty() || is_dir(dir)) return;
  const auto slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST)
    throw InputError(dir + ": cannot create folder (" + std::strerror(errno) + ")");
}

// Recursive walk with lstat: symbolic links are never followed (no loops, no escapes).
void walk(const std::string& root, const std::string& rel, std::vector<InputFile>& out, std::vector<std::string>& errors) {
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
    struct stat st{};
    if (::lstat((root + "/" + r).c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(root, r, out, errors);
    } else if (S_ISREG(st.st_mode) && std::find(exts.begin(), exts.end(), lower_ext(n)) != exts.end()) {
      out.push_back({root + "/" + r, r});
    }
  }
}

}  // namespace

const std::vector<std::string>& input_extensions() {
  static const std::vector<std::string> kExt = {"png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp", "pdf"};
  return kExt;
}

std::vector<InputFile> expand_inputs(const std::vector<std::string>& args, std::vector<std::string>& errors) {
  std::vector<InputFile> out;
  for (const auto& a : args) {
    if (a != "-" && is_dir(a)) {
      std::string root = a;
      while (root.size() > 1 && root.back() == '/') root.pop_back();
      walk(root, "", out, errors);
    } else {
      const auto slash = a.rfind('/');
      out.push_back({a, a == "-" ? std::string("stdin") : (slash == std::string::npos ? a : a.substr(slash + 1))});
    }
  }
  return out;
}

std::string output_path(const std::string& out_dir, const std::string& relative, const std::string& ext) {
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
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash + 1)) clean.resize(dot);
  return out_dir + "/" + clean + "." + ext;
}

bool path_exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) make_dirs(path.substr(0, slash));
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw InputError(path + ": cannot write (" + std::strerror(errno) + ")");
  const char* p = content.data();
  size_t left = content.size();
  int err = 0;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (!err && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    throw InputError(path + ": cannot write (" + std::strerror(err) + ")");
  }
}

void append_line(const std::string& path, const std::string& line) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos) make_dirs(path.substr(0, slash));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) throw InputError(path + ": cannot append (" + std::strerror(errno) + ")");
  const std::string data = line + "\n";
  const ssize_t n = ::write(fd, data.data(), data.size());
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  if (n != static_cast<ssize_t>(data.size()))
    throw InputError(path + ": cannot append (" + (err ? std::strerror(err) : "short write") + ")");
}

}  // namespace ocr
