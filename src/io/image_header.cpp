#include "io/image_header.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <string>

namespace ocr::io {
namespace {

// Bounds-checked reads; every header field comes from untrusted bytes.
struct Bytes {
  const uint8_t* data;
  size_t size;
  bool has(size_t off, size_t n) const { return off <= size && n <= size - off; }
  uint32_t be16(size_t off) const { return (uint32_t{data[off]} << 8) | data[off + 1]; }
  uint32_t le16(size_t off) const { return (uint32_t{data[off + 1]} << 8) | data[off]; }
  uint32_t be32(size_t off) const { return (be16(off) << 16) | be16(off + 2); }
  uint32_t le32(size_t off) const { return (le16(off + 2) << 16) | le16(off); }
  uint32_t le24(size_t off) const {
    return uint32_t{data[off]} | (uint32_t{data[off + 1]} << 8) | (uint32_t{data[off + 2]} << 16);
  }
  bool starts(size_t off, const char* magic, size_t n) const {
    return has(off, n) && std::memcmp(data + off, magic, n) == 0;
  }
};

constexpr uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

bool is_png(const Bytes& b) { return b.has(0, 8) && std::memcmp(b.data, kPngMagic, 8) == 0; }
bool is_jpeg(const Bytes& b) {
  return b.has(0, 3) && b.data[0] == 0xff && b.data[1] == 0xd8 && b.data[2] == 0xff;
}
bool is_tiff(const Bytes& b) { return b.starts(0, "II*\0", 4) || b.starts(0, "MM\0*", 4); }
bool is_webp(const Bytes& b) { return b.starts(0, "RIFF", 4) && b.starts(8, "WEBP", 4); }

// A TIFF structure (a whole TIFF file, or the payload of an EXIF block).
struct Tiff {
  Bytes b;
  bool little = true;
  bool valid = false;
  explicit Tiff(Bytes bytes) : b(bytes) {
    if (b.starts(0, "II*\0", 4)) {
      little = true;
      valid = true;
    } else if (b.starts(0, "MM\0*", 4)) {
      little = false;
      valid = true;
    }
  }
  uint32_t u16(size_t off) const { return little ? b.le16(off) : b.be16(off); }
  uint32_t u32(size_t off) const { return little ? b.le32(off) : b.be32(off); }
  // Value of a SHORT or LONG tag of the first IFD; -1 when absent or unreadable.
  int64_t ifd0_tag(uint32_t tag) const {
    if (!valid || !b.has(4, 4)) return -1;
    const size_t ifd = u32(4);
    if (!b.has(ifd, 2)) return -1;
    const size_t n_entries = u16(ifd);
    for (size_t e = 0; e < n_entries; ++e) {
      const size_t off = ifd + 2 + e * 12;
      if (!b.has(off, 12)) return -1;
      if (u16(off) != tag) continue;
      const uint32_t type = u16(off + 2);
      if (type == 3) return u16(off + 8);  // SHORT, left-justified in the value field
      if (type == 4) return u32(off + 8);  // LONG
      return -1;
    }
    return -1;
  }
};

constexpr uint32_t kTiffImageWidth = 256;
constexpr uint32_t kTiffImageLength = 257;
constexpr uint32_t kTiffOrientation = 0x0112;
// CRC-32 of PNG chunks (ISO 3309, as zlib's crc32).
uint32_t crc32(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

int orientation_from_tiff(Bytes b) {
  const int64_t v = Tiff(b).ifd0_tag(kTiffOrientation);
  return (v >= 1 && v <= 8) ? static_cast<int>(v) : 0;
}

// EXIF payloads start with "Exif\0\0" in JPEG APP1; PNG eXIf has the bare TIFF structure and WebP
// writers use either.
int orientation_from_exif_block(Bytes b) {
  if (b.starts(0, "Exif\0\0", 6)) return orientation_from_tiff({b.data + 6, b.size - 6});
  return orientation_from_tiff(b);
}

// Calls fn(marker, segment_offset, segment_length) for each JPEG marker segment up to SOS
// (inclusive); returns the offset just after the SOS header, or 0 when the walk fails.
template <typename Fn>
size_t walk_jpeg_segments(const Bytes& b, Fn fn) {
  size_t pos = 2;
  while (b.has(pos, 2)) {
    // Junk where a marker belongs is skipped, as libjpeg's next_marker and Pillow skip it: a stray
    // byte must not hide the SOF, and with it the --max-pixels check (found with tests/fuzz).
    if (b.data[pos] != 0xff) {
      ++pos;
      continue;
    }
    uint8_t marker = b.data[pos + 1];
    if (marker == 0xff) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0x00) {  // a stuffed zero outside entropy-coded data is junk too
      pos += 2;
      continue;
    }
    pos += 2;
    if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) continue;  // no length field
    if (marker == 0xd9 || !b.has(pos, 2)) return 0;
    const size_t len = b.be16(pos);
    if (len < 2 || !b.has(pos, len)) return 0;
    if (!fn(marker, pos + 2, len - 2)) return 0;
    pos += len;
    if (marker == 0xda) return pos;
  }
  return 0;
}

ImageHeader jpeg_header(const Bytes& b) {
  ImageHeader h;
  h.format = "JPEG";
  walk_jpeg_segments(b, [&](uint8_t m, size_t off, size_t len) {
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
    const bool is_sof = m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
    if (is_sof && len >= 5) {
      h.height = b.be16(off + 1);
      h.width = b.be16(off + 3);
      return false;  // stop walking
    }
    return true;
  });
  return h;
}

ImageHeader png_header(const Bytes& b) {
  ImageHeader h;
  h.format = "PNG";
  if (b.has(8, 16) && b.starts(12, "IHDR", 4)) {
    h.width = b.be32(16);
    h.height = b.be32(20);
  }
  return h;
}

ImageHeader bmp_header(const Bytes& b) {
  ImageHeader h;
  h.format = "BMP";
  if (!b.has(14, 4)) return h;
  const uint32_t dib = b.le32(14);
  if (dib == 12 && b.has(18, 4)) {  // BITMAPCOREHEADER: 16-bit sizes
    h.width = b.le16(18);
    h.height = b.le16(20);
  } else if (dib >= 16 && b.has(18, 8)) {
    h.width = static_cast<int32_t>(b.le32(18));
    const int64_t height = static_cast<int32_t>(b.le32(22));  // negative: top-down rows
    h.height = height < 0 ? -height : height;
    if (h.width < 0) h.width = 0;
  }
  return h;
}

ImageHeader tiff_header(const Bytes& b) {
  ImageHeader h;
  h.format = "TIFF";
  const Tiff t(b);
  const int64_t w = t.ifd0_tag(kTiffImageWidth);
  const int64_t l = t.ifd0_tag(kTiffImageLength);
  if (w > 0 && l > 0) {
    h.width = w;
    h.height = l;
  }
  return h;
}

ImageHeader webp_header(const Bytes& b) {
  ImageHeader h;
  h.format = "WebP";
  if (!b.has(12, 8)) return h;
  const size_t d = 20;  // payload of the first chunk
  if (b.starts(12, "VP8 ", 4) && b.has(d, 10) && b.data[d + 3] == 0x9d && b.data[d + 4] == 0x01 &&
      b.data[d + 5] == 0x2a) {
    h.width = b.le16(d + 6) & 0x3fff;
    h.height = b.le16(d + 8) & 0x3fff;
  } else if (b.starts(12, "VP8L", 4) && b.has(d, 5) && b.data[d] == 0x2f) {
    const uint32_t bits = b.le32(d + 1);
    h.width = (bits & 0x3fff) + 1;
    h.height = ((bits >> 14) & 0x3fff) + 1;
  } else if (b.starts(12, "VP8X", 4) && b.has(d, 10)) {
    h.width = int64_t{b.le24(d + 4)} + 1;
    h.height = int64_t{b.le24(d + 7)} + 1;
  }
  return h;
}

// Netpbm: "P1".."P6", then width and height as ASCII decimals, '#' comments allowed.
ImageHeader pnm_header(const Bytes& b) {
  ImageHeader h;
  h.format = "PNM";
  size_t pos = 2;
  int64_t values[2] = {0, 0};
  for (int64_t& v : values) {
    while (pos < b.size) {
      if (b.data[pos] == '#') {
        while (pos < b.size && b.data[pos] != '\n' && b.data[pos] != '\r') ++pos;
      } else if (std::isspace(b.data[pos])) {
        ++pos;
      } else {
        break;
      }
    }
    size_t digits = 0;
    while (pos < b.size && std::isdigit(b.data[pos]) && digits < 12) {
      v = v * 10 + (b.data[pos] - '0');
      ++pos;
      ++digits;
    }
    if (digits == 0) return h;
  }
  h.width = values[0];
  h.height = values[1];
  return h;
}

}  // namespace

ImageHeader read_image_header(const uint8_t* data, size_t size) {
  const Bytes b{data, size};
  if (is_png(b)) return png_header(b);
  if (is_jpeg(b)) return jpeg_header(b);
  if (b.starts(0, "BM", 2)) return bmp_header(b);
  if (is_tiff(b)) return tiff_header(b);
  if (is_webp(b)) return webp_header(b);
  if (b.has(0, 3) && b.data[0] == 'P' && b.data[1] >= '1' && b.data[1] <= '6' &&
      std::isspace(b.data[2])) {
    return pnm_header(b);
  }
  return {};
}

int read_exif_orientation(const uint8_t* data, size_t size) {
  const Bytes b{data, size};
  if (is_jpeg(b)) {
    int orientation = 0;
    walk_jpeg_segments(b, [&](uint8_t m, size_t off, size_t len) {
      if (m == 0xe1 && len >= 6 && b.starts(off, "Exif\0\0", 6)) {
        orientation = orientation_from_exif_block({b.data + off, len});
        return false;
      }
      return true;
    });
    return orientation;
  }
  if (is_png(b)) {
    size_t pos = 8;
    while (b.has(pos, 8)) {
      const size_t len = b.be32(pos);
      if (!b.has(pos + 8, len)) return 0;
      if (b.starts(pos + 4, "eXIf", 4)) return orientation_from_exif_block({b.data + pos + 8, len});
      if (b.starts(pos + 4, "IEND", 4)) return 0;
      pos += 12 + len;
    }
    return 0;
  }
  if (is_webp(b)) {
    size_t pos = 12;
    while (b.has(pos, 8)) {
      const size_t len = b.le32(pos + 4);
      if (!b.has(pos + 8, len)) return 0;
      if (b.starts(pos, "EXIF", 4)) return orientation_from_exif_block({b.data + pos + 8, len});
      pos += 8 + len + (len & 1);  // chunks are padded to even sizes
    }
    return 0;
  }
  if (is_tiff(b)) return orientation_from_tiff(b);
  return 0;
}

std::string find_truncation(const uint8_t* data, size_t size) {
  const Bytes b{data, size};
  if (is_jpeg(b)) {
    size_t scan = walk_jpeg_segments(b, [](uint8_t, size_t, size_t) { return true; });
    // Segments we cannot walk (one cut off, EOI before any scan): fall back to any EOI marker.
    if (scan == 0) scan = 2;
    // Entropy-coded data never holds FF D9 (an FF there is followed by 00 or a restart marker),
    // so the first FF D9 after the first scan header is the end of the image.
    for (size_t i = scan; i + 1 < size; ++i) {
      if (data[i] == 0xff && data[i + 1] == 0xd9) return "";
    }
    return "truncated JPEG data (no end-of-image marker)";
  }
  if (is_png(b)) {
    // libpng reports these on stderr before failing; Pillow refuses them too.
    if (!b.has(8, 8)) return "truncated PNG data (no IHDR chunk)";
    if (!b.starts(12, "IHDR", 4) || b.be32(8) != 13)
      return "corrupt PNG data (the first chunk is not a 13-byte IHDR)";
    if (b.has(16, 8) && (b.be32(16) == 0 || b.be32(20) == 0 || b.be32(16) > 0x7fffffff ||
                         b.be32(20) > 0x7fffffff)) {
      return "corrupt PNG data (IHDR claims " + std::to_string(b.be32(16)) + "x" +
             std::to_string(b.be32(20)) + " pixels)";
    }
    size_t pos = 8;
    while (b.has(pos, 8)) {
      const size_t len = b.be32(pos);
      if (len > 0x7fffffff || !b.has(pos + 8, len + size_t{4})) {
        return "truncated PNG data (chunk at byte " + std::to_string(pos) + " is cut off)";
      }
      if (crc32(data + pos + 4, len + 4) != b.be32(pos + 8 + len)) {
        return "corrupt PNG data (checksum mismatch in the " +
               std::string(reinterpret_cast<const char*>(data + pos + 4), 4) + " chunk at byte " +
               std::to_string(pos) + ")";
      }
      if (b.starts(pos + 4, "IEND", 4)) return "";
      pos += 12 + len;
    }
    return "truncated PNG data (no IEND chunk)";
  }
  if (b.starts(0, "BM", 2)) {
    // OpenCV throws on a short header or short rows and prints the exception itself.
    if (!b.has(14, 4) || !b.has(14, std::max<uint32_t>(b.le32(14), 12)))
      return "truncated BMP data (the header is cut off)";
    const uint64_t pixel_offset = b.le32(10);
    const uint32_t dib = b.le32(14);
    if (pixel_offset > size)
      return "truncated BMP data (the pixels would start at byte " + std::to_string(pixel_offset) +
             ")";
    // Uncompressed rows (BI_RGB, BI_BITFIELDS); the last row's padding may be missing, as some
    // writers leave it out.
    int64_t w = 0, h = 0;
    uint32_t bpp = 0, compression = 0;
    if (dib == 12 && b.has(18, 8)) {
      w = b.le16(18);
      h = b.le16(20);
      bpp = b.le16(24);
    } else if (dib >= 40 && b.has(18, 16)) {
      w = static_cast<int32_t>(b.le32(18));
      h = static_cast<int32_t>(b.le32(22));
      bpp = b.le16(28);
      compression = b.le32(30);
    }
    if (h < 0) h = -h;
    if (w > 0 && h > 0 && (compression == 0 || compression == 3) &&
        (bpp == 1 || bpp == 4 || bpp == 8 || bpp == 16 || bpp == 24 || bpp == 32)) {
      const uint64_t row = (static_cast<uint64_t>(w) * bpp + 31) / 32 * 4;
      const uint64_t last_row = (static_cast<uint64_t>(w) * bpp + 7) / 8;
      if (row <= (UINT64_MAX / 2) / static_cast<uint64_t>(h)) {
        const uint64_t need = pixel_offset + row * static_cast<uint64_t>(h - 1) + last_row;
        if (size < need) {
          return "truncated BMP data (" + std::to_string(size) + " bytes, the header needs " +
                 std::to_string(need) + ")";
        }
      }
    }
    return "";
  }
  if (is_webp(b)) {
    // OpenCV reads 32 header bytes unchecked and prints the exception; libwebp needs the RIFF.
    const uint64_t riff_end = uint64_t{b.le32(4)} + 8;
    if (size < 32 || riff_end > size) {
      return "truncated WebP data (" + std::to_string(size) + " bytes, the RIFF header says " +
             std::to_string(riff_end) + ")";
    }
    return "";
  }
  return "";
}

}  // namespace ocr::io
