// Fuzzes the model manifest reader (src/model/manifest.cpp): the input is written as
// DIR/manifest.json and read back with ocr::read_manifest. ocr::ModelError is the documented
// refusal; a manifest that is accepted must satisfy what the engine relies on.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "model/manifest.h"
#include "ocr/errors.h"

namespace {

std::string g_dir;  // a private temporary model folder

void remove_dir() {
  ::unlink((g_dir + "/manifest.json").c_str());
  ::rmdir(g_dir.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A memory file system when there is one: rewriting a file on ext4 starts writeback each time.
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp && *tmp ? tmp : "/tmp";
  if (!tmp && ::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
  std::string tmpl = base + "/ocr-manifest-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  g_dir = tmpl;
  std::atexit(remove_dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = g_dir + "/manifest.json";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  OCR_FUZZ_CHECK(fd >= 0, "cannot create the manifest file");
  OCR_FUZZ_CHECK(size == 0 || ::write(fd, data, size) == static_cast<ssize_t>(size), "short write");
  ::close(fd);

  ocr::Manifest m;
  try {
    m = ocr::read_manifest(g_dir);
  } catch (const ocr::ModelError&) {
    return 0;
  }
  OCR_FUZZ_CHECK(m.format_version == ocr::kManifestFormatVersion, "format version");
  OCR_FUZZ_CHECK(m.dtype == "bfloat16" || m.dtype == "float32", "dtype");
  OCR_FUZZ_CHECK(
      m.hidden > 0 && m.vocab > 0 && m.n_layers > 0 && m.n_heads > 0 && m.max_positions > 0,
      "positive dims");
  OCR_FUZZ_CHECK(m.head_dim > 0 && m.head_dim * m.n_heads == m.hidden, "head_dim");
  for (int32_t id : {m.tokens.bos, m.tokens.eos, m.tokens.image})
    OCR_FUZZ_CHECK(id >= 0 && id < m.vocab, "special token inside the vocabulary");
  OCR_FUZZ_CHECK(m.patch_size > 0 && m.downsample_ratio > 0, "patch size and downsampling");
  OCR_FUZZ_CHECK(m.min_tiles >= 1 && m.min_tiles <= m.max_tiles, "tile range");
  const int64_t unit = int64_t{m.patch_size} * m.downsample_ratio;
  for (const ocr::ModeSpec& s : m.modes) {
    OCR_FUZZ_CHECK(s.base_size > 0 && s.image_size > 0, s.name.c_str());
    OCR_FUZZ_CHECK(s.base_size % unit == 0 && s.image_size % unit == 0, s.name.c_str());
  }
  return 0;
}
