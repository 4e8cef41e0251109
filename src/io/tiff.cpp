#include "io/tiff.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>

#include "ocr/errors.h"
#include "ocr/image_io.h"

namespace ocr::io {
namespace {

constexpr uint16_t kImageWidth = 256;
constexpr uint16_t kImageLength = 257;
constexpr uint16_t kStripOffsets = 273;
constexpr uint16_t kStripByteCounts = 279;
constexpr uint16_t kTileOffsets = 324;
constexpr uint16_t kTileByteCounts = 325;

// Bounds-checked reads of untrusted bytes in the file's byte order.
struct Reader {
  const uint8_t* data;
  size_t size;
  bool little;
  bool has(uint64_t off, uint64_t n) const { return off <= size && n <= size - off; }
  uint64_t uint(uint64_t off, int n_bytes) const {
    uint64_t v = 0;
    for (int i = 0; i < n_bytes; ++i) {
      const uint64_t b = data[off + static_cast<uint64_t>(little ? n_bytes - 1 - i : i)];
      v = (v << 8) | b;
    }
    return v;
  }
};

// One directory entry: tag, type, count and where its values are (inline or at an offset).
struct Entry {
  uint16_t tag = 0;
  uint16_t type = 0;
  uint64_t count = 0;
  uint64_t value_pos = 0;  // file offset of the first value (inline field or pointed-to array)
};

int type_size(uint16_t type) {
  switch (type) {
    case 1:
    case 2:
    case 6:
    case 7:
      return 1;  // BYTE, ASCII, SBYTE, UNDEFINED
    case 3:
    case 8:
      return 2;  // SHORT, SSHORT
    case 4:
    case 9:
    case 11:
    case 13:
      return 4;  // LONG, SLONG, FLOAT, IFD
    case 5:
    case 10:
    case 12:
    case 16:
    case 17:
    case 18:
      return 8;  // RATIONAL.., LONG8, IFD8
    default:
      return 0;
  }
}

// Integer values (SHORT, LONG, LONG8) of an entry; empty when the type is not an integer or the
// array is not inside the file.
std::vector<uint64_t> int_values(const Reader& r, const Entry& e) {
  const int n = (e.type == 3 || e.type == 4 || e.type == 16) ? type_size(e.type) : 0;
  if (n == 0 || e.count == 0 || e.count > r.size || !r.has(e.value_pos, e.count * n)) return {};
  std::vector<uint64_t> out(e.count);
  for (uint64_t i = 0; i < e.count; ++i) out[i] = r.uint(e.value_pos + i * n, n);
  return out;
}

std::string page_truncation(const Reader& r, const std::vector<Entry>& entries, size_t page) {
  auto find = [&](uint16_t tag) -> const Entry* {
    for (const auto& e : entries)
      if (e.tag == tag) return &e;
    return nullptr;
  };
  for (auto [off_tag, count_tag] :
       {std::pair{kStripOffsets, kStripByteCounts}, std::pair{kTileOffsets, kTileByteCounts}}) {
    const Entry* offs = find(off_tag);
    const Entry* counts = find(count_tag);
    if (!offs) continue;
    const auto o = int_values(r, *offs);
    const auto c = counts ? int_values(r, *counts) : std::vector<uint64_t>{};
    if (o.empty() || c.size() != o.size()) continue;  // no byte counts: nothing to check against
    for (size_t i = 0; i < o.size(); ++i) {
      if (c[i] == 0) continue;
      if (!r.has(o[i], c[i])) {
        return "truncated TIFF: the image data of page " + std::to_string(page + 1) +
               " ends at byte " + std::to_string(o[i] + c[i]) + " but the file has " +
               std::to_string(r.size) + " bytes";
      }
    }
  }
  return "";
}

}  // namespace

bool is_tiff_data(const uint8_t* data, size_t size) {
  if (size < 4) return false;
  return std::memcmp(data, "II*\0", 4) == 0 || std::memcmp(data, "MM\0*", 4) == 0 ||
         std::memcmp(data, "II+\0", 4) == 0 || std::memcmp(data, "MM\0+", 4) == 0;
}

TiffLayout read_tiff_layout(const uint8_t* data, size_t size, const std::string& name) {
  TiffLayout layout;
  if (!is_tiff_data(data, size)) throw InputError(name + ": not a TIFF file");
  layout.little = data[0] == 'I';
  Reader r{data, size, layout.little};
  layout.big = r.uint(2, 2) == 43;
  const int off_bytes = layout.big ? 8 : 4;
  const uint64_t header = layout.big ? 16 : 8;
  if (!r.has(0, header)) {
    throw InputError(name + ": truncated TIFF: the header needs " + std::to_string(header) +
                     " bytes, the file has " + std::to_string(size));
  }
  if (layout.big && (r.uint(4, 2) != 8 || r.uint(6, 2) != 0))
    throw InputError(name + ": damaged BigTIFF header");
  const int count_bytes = layout.big ? 8 : 2;
  const uint64_t entry_bytes = layout.big ? 20 : 12;
  std::set<uint64_t> seen;
  uint64_t ifd = r.uint(layout.big ? 8 : 4, off_bytes);
  while (ifd != 0) {
    const std::string where =
        name + ": " +
        (layout.pages.empty()
             ? std::string("truncated TIFF: the first page's")
             : "truncated TIFF: page " + std::to_string(layout.pages.size() + 1) + "'s");
    if (!seen.insert(ifd).second) break;  // a directory loop ends the chain (libtiff does the same)
    if (!r.has(ifd, count_bytes)) {
      throw InputError(where + " directory at byte " + std::to_string(ifd) +
                       " lies past the end of the file (" + std::to_string(size) + " bytes)");
    }
    const uint64_t n_entries = r.uint(ifd, count_bytes);
    if (n_entries == 0) {
      throw InputError(name + ": damaged TIFF: page " + std::to_string(layout.pages.size() + 1) +
                       " has an empty directory");
    }
    const uint64_t next_pos =
        ifd + count_bytes + (n_entries > size ? size : n_entries) * entry_bytes;
    if (n_entries > size || !r.has(ifd + count_bytes, n_entries * entry_bytes + off_bytes)) {
      throw InputError(where + " directory at byte " + std::to_string(ifd) +
                       " runs past the end of the file (" + std::to_string(size) + " bytes)");
    }
    std::vector<Entry> entries;
    entries.reserve(n_entries);
    for (uint64_t k = 0; k < n_entries; ++k) {
      const uint64_t at = ifd + count_bytes + k * entry_bytes;
      Entry e;
      e.tag = static_cast<uint16_t>(r.uint(at, 2));
      e.type = static_cast<uint16_t>(r.uint(at + 2, 2));
      e.count = r.uint(at + 4, off_bytes);
      const uint64_t field = at + 4 + off_bytes;
      const int ts = type_size(e.type);
      const bool inline_value = ts > 0 && e.count <= static_cast<uint64_t>(off_bytes / ts);
      e.value_pos = inline_value ? field : r.uint(field, off_bytes);
      entries.push_back(e);
    }
    TiffPage page;
    page.ifd_offset = ifd;
    for (const auto& e : entries) {
      if (e.tag != kImageWidth && e.tag != kImageLength) continue;
      const auto v = int_values(r, e);
      if (v.size() == 1)
        (e.tag == kImageWidth ? page.width : page.height) =
            static_cast<int64_t>(std::min<uint64_t>(v[0], INT64_MAX / 4));
    }
    page.truncation = page_truncation(r, entries, layout.pages.size());
    layout.pages.push_back(page);
    ifd = r.uint(next_pos, off_bytes);
  }
  if (layout.pages.empty()) throw InputError(name + ": damaged TIFF: no image directory");
  return layout;
}

std::vector<uint8_t> tiff_select_page(const uint8_t* data, size_t size, const TiffLayout& layout,
                                      size_t index0) {
  std::vector<uint8_t> out(data, data + size);
  const uint64_t ifd = layout.pages.at(index0).ifd_offset;
  const int n = layout.big ? 8 : 4;
  const size_t at = layout.big ? 8 : 4;
  for (int i = 0; i < n; ++i) {
    const int shift = 8 * (layout.little ? i : n - 1 - i);
    out[at + i] = static_cast<uint8_t>(ifd >> shift);
  }
  return out;
}

}  // namespace ocr::io

// Public entry points (include/ocr/image_io.h) for documents of several image pages.
namespace ocr {

int count_image_pages(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (!io::is_tiff_data(bytes.data(), bytes.size())) return 1;
  const auto layout = io::read_tiff_layout(bytes.data(), bytes.size(), name);
  if (layout.pages.size() > static_cast<size_t>(INT32_MAX))
    throw InputError(name + ": TIFF has too many pages (" + std::to_string(layout.pages.size()) +
                     ")");
  return static_cast<int>(layout.pages.size());
}

ImageU8 decode_image_page(const std::vector<uint8_t>& bytes, int index0, const std::string& name,
                          const DecodeOptions& options) {
  if (!io::is_tiff_data(bytes.data(), bytes.size())) {
    if (index0 != 0)
      throw InputError(name + ": page " + std::to_string(index0 + 1) +
                       " asked of a single-page image");
    return decode_image(bytes, name, options);
  }
  const auto layout = io::read_tiff_layout(bytes.data(), bytes.size(), name);
  if (index0 < 0 || static_cast<size_t>(index0) >= layout.pages.size()) {
    throw InputError(name + ": page " + std::to_string(index0 + 1) + " asked of a TIFF of " +
                     std::to_string(layout.pages.size()) + " page(s)");
  }
  if (layout.big && !layout.little) {
    // OpenCV 4.6's TIFF reader does not recognise the "MM\0+" signature.
    throw InputError(name +
                     ": big-endian BigTIFF cannot be decoded here; convert it (e.g. tiffcp -L " +
                     name + " out.tif)");
  }
  const auto& page = layout.pages[static_cast<size_t>(index0)];
  const std::string where =
      layout.pages.size() > 1 ? name + ": page " + std::to_string(index0 + 1) : name;
  // Before anything is decoded or copied; divided, not multiplied: the sizes are untrusted.
  if (page.width > 0 && page.height > 0 && page.width > options.max_pixels / page.height) {
    throw InputError(where + ": image is " + std::to_string(page.width) + "x" +
                     std::to_string(page.height) + " pixels, over the --max-pixels limit of " +
                     std::to_string(options.max_pixels));
  }
  if (!page.truncation.empty()) throw InputError(name + ": " + page.truncation);
  if (index0 == 0) return decode_image(bytes, where, options);
  return decode_image(
      io::tiff_select_page(bytes.data(), bytes.size(), layout, static_cast<size_t>(index0)), where,
      options);
}

}  // namespace ocr
