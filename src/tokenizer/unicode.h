// Unicode classes and UTF-8 helpers for the tokenizer (no ICU: the classes must be Oniguruma's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ocr::tok {

// Class bits; the same values as scripts/gen_unicode_tables.py writes into unicode_tables.inc.
enum UnicodeClass : uint8_t {
  kClassL = 0x01,   // \p{L}
  kClassN = 0x02,   // \p{N}
  kClassM = 0x04,   // \p{M}
  kClassP = 0x08,   // \p{P}
  kClassS = 0x10,   // \p{S}
  kClassWs = 0x20,  // \s (White_Space)
};

// Class bits of ASCII, spelled out so that the common case is one load from a tiny table
// (a unit test checks it against the generated tables).
inline constexpr uint8_t kAsciiClasses[128] = {
    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x20, 0x20, 0x20, 0x20, 0x20, 0,    0,
    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
    0x20, 0x08, 0x08, 0x08, 0x10, 0x08, 0x08, 0x08, 0x08, 0x08, 0x08, 0x10, 0x08, 0x08, 0x08, 0x08,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x08, 0x08, 0x10, 0x10, 0x10, 0x08,
    0x08, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x08, 0x08, 0x08, 0x10, 0x08,
    0x10, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x08, 0x10, 0x08, 0x10, 0,
};

// Class bits from the generated tables, for any code point.
uint8_t unicode_classes_from_tables(char32_t cp);

// Class bits of one code point (0 for unassigned, controls, surrogates, ...).
inline uint8_t unicode_classes(char32_t cp) {
  return cp < 0x80 ? kAsciiClasses[cp] : unicode_classes_from_tables(cp);
}

// Decodes the code point at s[i] of text already known to be valid UTF-8; *len gets its length.
inline char32_t decode_valid_utf8(std::string_view s, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  auto cont = [&](size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
  };
  if (b0 < 0xE0) {
    *len = 2;
    return (static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1);
  }
  if (b0 < 0xF0) {
    *len = 3;
    return (static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2);
  }
  *len = 4;
  return (static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
}

// Appends cp as UTF-8.
void append_utf8(std::string& out, char32_t cp);

// Whether the bytes are well-formed UTF-8.
bool is_valid_utf8(std::string_view bytes);

// Reads bytes as UTF-8 and appends the text to out, every maximal invalid subpart replaced by one
// U+FFFD (Unicode's recommended practice, as Rust's String::from_utf8_lossy does). With
// final=false a sequence cut short by the end of the bytes is not replaced but left unread, since
// later bytes may complete it. Returns how many bytes were read.
size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final);

}  // namespace ocr::tok
