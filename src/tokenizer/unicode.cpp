#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>
#include <memory>

namespace ocr::tok {
namespace {

struct UnicodeRun {
  char32_t first;
  uint8_t classes;
};

#include "tokenizer/unicode_tables.inc"

// Binary search in the run table: the last run starting at or before cp.
uint8_t lookup_runs(char32_t cp) {
  const UnicodeRun* end = kUnicodeRuns + std::size(kUnicodeRuns);
  const UnicodeRun* it = std::upper_bound(
      kUnicodeRuns, end, cp, [](char32_t c, const UnicodeRun& r) { return c < r.first; });
  return it == kUnicodeRuns ? 0 : (it - 1)->classes;
}

// Direct table for the BMP, where nearly all text lives: one load instead of a search.
const std::array<uint8_t, 0x10000>& bmp_table() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<uint8_t, 0x10000>>();
    for (char32_t cp = 0; cp < 0x10000; ++cp) (*t)[cp] = lookup_runs(cp);
    return t;
  }();
  return *table;
}

// Expected range of the second byte after each lead byte; later bytes are always 80..BF.
struct LeadInfo {
  int n_bytes;  // total length of the sequence, 0 for a byte that cannot start one
  unsigned char lo, hi;
};

LeadInfo lead_info(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

uint8_t unicode_classes_from_tables(char32_t cp) {
  if (cp < 0x10000) return bmp_table()[cp];
  return lookup_runs(cp);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view bytes) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    // ASCII runs are the common case: skip them without the general decoder.
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const LeadInfo info = lead_info(static_cast<unsigned char>(bytes[i]));
    if (info.n_bytes == 0 || i + info.n_bytes > n) return false;
    const auto b1 = static_cast<unsigned char>(bytes[i + 1]);
    if (b1 < info.lo || b1 > info.hi) return false;
    for (int k = 2; k < info.n_bytes; ++k) {
      const auto b = static_cast<unsigned char>(bytes[i + k]);
      if (b < 0x80 || b > 0xBF) return false;
    }
    i += info.n_bytes;
  }
  return true;
}

size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final) {
  size_t i = 0;
  const size_t n = bytes.size();
  out.reserve(out.size() + n);
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(bytes[i]);
    if (b0 < 0x80) {
      out += static_cast<char>(b0);
      ++i;
      continue;
    }
    const LeadInfo info = lead_info(b0);
    if (info.n_bytes == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    // Consume as many bytes as still fit the sequence; the first misfit ends the subpart.
    size_t k = 1;
    for (; k < static_cast<size_t>(info.n_bytes) && i + k < n; ++k) {
      const auto b = static_cast<unsigned char>(bytes[i + k]);
      const unsigned char lo = k == 1 ? info.lo : 0x80;
      const unsigned char hi = k == 1 ? info.hi : 0xBF;
      if (b < lo || b > hi) break;
    }
    if (k == static_cast<size_t>(info.n_bytes)) {
      out.append(bytes.data() + i, k);
    } else if (i + k == n && !final) {
      return i;  // a valid prefix cut by the end of the bytes: wait for the rest
    } else {
      out += kReplacement;
    }
    i += k;
  }
  return n;
}

}  // namespace ocr::tok
