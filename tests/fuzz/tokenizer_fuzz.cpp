// Fuzzes the tokenizer (src/tokenizer) with the real DeepSeek-OCR tokenizer.json, named by the
// environment variable OCR_FUZZ_TOKENIZER (scripts/fuzz.sh decompresses models/tokenizer/).
// The input is read twice: as text to encode, and as an array of ids to decode. Checked: ids are
// in range, encode is deterministic (word cache), decode(encode(text)) == text for UTF-8 text,
// decode never yields invalid UTF-8 whatever the ids (negative, too large, specials), and the
// stream decoder's output equals decode() (the documented contract).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "ocr/errors.h"
#include "ocr/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::unique_ptr<ocr::Tokenizer> g_tokenizer;

// Ids from the input bytes: mostly inside (or just outside) the vocabulary, sometimes raw int32.
std::vector<int32_t> ids_from_bytes(const uint8_t* data, size_t size, int32_t n_vocab) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint32_t v;
    std::memcpy(&v, data + i, 4);
    if (v & 0x40000000u) {
      ids.push_back(static_cast<int32_t>(v));
    } else {
      const uint32_t span = static_cast<uint32_t>(n_vocab) + 256;
      ids.push_back(static_cast<int32_t>(v % span) - 128);
    }
  }
  return ids;
}

std::string stream_decode(const std::vector<int32_t>& ids, bool skip_special) {
  ocr::StreamDecoder stream(*g_tokenizer, skip_special);
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    OCR_FUZZ_CHECK(ocr::tok::is_valid_utf8(piece), "stream pieces are whole UTF-8 characters");
    text += piece;
  }
  return text + stream.finish();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* path = std::getenv("OCR_FUZZ_TOKENIZER");
  if (!path || !*path) {
    std::fprintf(stderr, "tokenizer_fuzz: set OCR_FUZZ_TOKENIZER to a tokenizer.json\n");
    std::exit(1);
  }
  try {
    g_tokenizer = std::make_unique<ocr::Tokenizer>(ocr::Tokenizer::from_file(path));
  } catch (const ocr::ModelError& e) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", e.what());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ocr::Tokenizer& tok = *g_tokenizer;
  const std::string text(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> ids = tok.encode(text);
  for (int32_t id : ids) OCR_FUZZ_CHECK(id >= 0 && id < tok.size(), "encoded id in range");
  OCR_FUZZ_CHECK(tok.encode(text) == ids, "encode is deterministic (word cache)");
  const std::string decoded = tok.decode(ids);
  if (ocr::tok::is_valid_utf8(text)) {
    OCR_FUZZ_CHECK(decoded == text, "decode(encode(text)) == text");
  } else {
    std::string lossy;
    ocr::tok::append_utf8_lossy(lossy, text, /*final=*/true);
    OCR_FUZZ_CHECK(decoded == lossy, "invalid UTF-8 is encoded as its lossy reading");
  }

  const std::vector<int32_t> raw = ids_from_bytes(data, size, tok.size());
  for (bool skip : {false, true}) {
    const std::string d = tok.decode(raw, skip);
    OCR_FUZZ_CHECK(ocr::tok::is_valid_utf8(d), "decode yields UTF-8");
    OCR_FUZZ_CHECK(stream_decode(raw, skip) == d, "stream decode == decode");
  }
  for (int32_t id : raw) {
    const std::string& bytes = tok.token_bytes(id);
    if (id < 0 || id >= tok.size())
      OCR_FUZZ_CHECK(bytes.empty(), "no bytes outside the vocabulary");
    if (tok.is_special(id)) OCR_FUZZ_CHECK(id >= 0 && id < tok.size(), "specials are in range");
  }
  return 0;
}
