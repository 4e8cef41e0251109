// Image decoding with OpenCV into PIL-like 8-bit RGB, with the header checks OpenCV lacks.
#include "ocr/image_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "io/image_header.h"
#include "io/tiff.h"
#include "ocr/errors.h"

namespace ocr {
namespace {

// OpenCV logs decoder failures to stderr itself; we report them as one InputError line instead.
void quiet_opencv_logging() {
  static std::once_flag once;
  std::call_once(once,
                 [] { cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT); });
}

std::string first_bytes_hex(const std::vector<uint8_t>& bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < std::min<size_t>(bytes.size(), 8); ++i) {
    if (i) out += ' ';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 15];
  }
  return out;
}

// Converts the decoder's output (1 or 3 channels, BGR, 8/16-bit or other depths) to RGB8.
ImageU8 to_rgb8(const cv::Mat& decoded, const std::string& name) {
  cv::Mat m8;
  switch (decoded.depth()) {
    case CV_8U:
      m8 = decoded;
      break;
    case CV_16U: {
      // The high byte, as Pillow's 16-bit PNG/TIFF unpackers and libpng's strip_16 do (truncation;
      // convertTo would round).
      m8.create(decoded.size(), CV_MAKETYPE(CV_8U, decoded.channels()));
      for (int y = 0; y < decoded.rows; ++y) {
        const uint16_t* in = decoded.ptr<uint16_t>(y);
        uint8_t* out = m8.ptr<uint8_t>(y);
        for (int i = 0; i < decoded.cols * decoded.channels(); ++i) out[i] = in[i] >> 8;
      }
      break;
    }
    default:
      // Signed or float samples (rare TIFF variants): saturate like PIL's I/F -> L conversions.
      decoded.convertTo(m8, CV_8U);
      break;
  }
  ImageU8 out(m8.cols, m8.rows);
  const int cn = m8.channels();
  if (cn != 1 && cn != 3 && cn != 4) {
    throw InputError(name + ": unsupported image with " + std::to_string(cn) + " channels");
  }
  for (int y = 0; y < m8.rows; ++y) {
    const uint8_t* in = m8.ptr<uint8_t>(y);
    uint8_t* o = out.px(0, y);
    for (int x = 0; x < m8.cols; ++x, in += cn, o += 3) {
      if (cn == 1) {
        o[0] = o[1] = o[2] = in[0];
      } else {  // BGR(A): alpha is dropped, not composited, like PIL convert("RGB")
        o[0] = in[2];
        o[1] = in[1];
        o[2] = in[0];
      }
    }
  }
  return out;
}

// PIL ImageOps.exif_transpose: orientation 2..8 -> flip/rotate so the image displays upright.
ImageU8 apply_orientation(const ImageU8& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int w = in.width, h = in.height;
  const bool swap = orientation >= 5;  // TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90
  ImageU8 out(swap ? h : w, swap ? w : h);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2:
          sx = w - 1 - x;
          break;  // FLIP_LEFT_RIGHT
        case 3:
          sx = w - 1 - x;
          sy = h - 1 - y;
          break;  // ROTATE_180
        case 4:
          sy = h - 1 - y;
          break;  // FLIP_TOP_BOTTOM
        case 5:
          sx = y;
          sy = x;
          break;  // TRANSPOSE
        case 6:
          sx = y;
          sy = h - 1 - x;
          break;  // ROTATE_270 (clockwise 90)
        case 7:
          sx = w - 1 - y;
          sy = h - 1 - x;
          break;  // TRANSVERSE
        case 8:
          sx = w - 1 - y;
          sy = x;
          break;  // ROTATE_90 (counter-clockwise 90)
      }
      std::copy_n(in.px(sx, sy), 3, out.px(x, y));
    }
  }
  return out;
}

}  // namespace

ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name,
                     const DecodeOptions& options) {
  if (bytes.empty()) throw InputError(name + ": empty file (0 bytes)");
  quiet_opencv_logging();

  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    throw InputError(name + ": file of " + std::to_string(bytes.size()) +
                     " bytes is larger than the 2 GiB the decoders accept");
  }
  io::ImageHeader header = io::read_image_header(bytes.data(), bytes.size());
  if (header.format.empty() && io::is_tiff_data(bytes.data(), bytes.size())) {
    // BigTIFF: the first page's size from its directory (throws InputError when it is damaged).
    const io::TiffLayout layout = io::read_tiff_layout(bytes.data(), bytes.size(), name);
    header.format = "TIFF";
    if (!layout.pages.empty()) {
      header.width = layout.pages.front().width;
      header.height = layout.pages.front().height;
    }
  }
  // Divided, not multiplied: header sizes are untrusted 32-bit values.
  if (header.has_size() && header.width > options.max_pixels / header.height) {
    throw InputError(name + ": image is " + std::to_string(header.width) + "x" +
                     std::to_string(header.height) + " pixels, over the --max-pixels limit of " +
                     std::to_string(options.max_pixels));
  }
  // Only the formats probed above reach the decoders: OpenCV also reads Radiance HDR, PFM, PAM,
  // Sun raster, JPEG 2000, OpenEXR and DICOM, where a 100-byte file made it allocate gigabytes
  // before the size check below (found with tests/fuzz).
  if (header.format.empty()) {
    throw InputError(name + ": not a supported image format (first bytes " +
                     first_bytes_hex(bytes) + ")");
  }
  const std::string truncation = io::find_truncation(bytes.data(), bytes.size());
  if (!truncation.empty()) throw InputError(name + ": " + truncation);
  // Nor do images whose size the probe cannot read (a TIFF width stored as SLONG, which libtiff
  // accepts; found with tests/fuzz): the decoders would size their buffers from it unchecked.
  if (!header.has_size()) {
    throw InputError(name + ": corrupt or truncated " + header.format +
                     " data (no image size in its header)");
  }

  // EXIF orientation is applied by us below, the same way for JPEG, PNG and WebP (OpenCV 4.6 reads
  // it only from JPEG).
  const int flags = cv::IMREAD_ANYCOLOR | cv::IMREAD_ANYDEPTH | cv::IMREAD_IGNORE_ORIENTATION;
  cv::Mat decoded;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8U,
                         const_cast<uint8_t*>(bytes.data()));
    decoded = cv::imdecode(buffer, flags);
  } catch (const cv::Exception& e) {
    std::string what = e.err.empty() ? e.what() : e.err;
    std::replace(what.begin(), what.end(), '\n', ' ');
    throw InputError(name + ": cannot decode " + header.format + " (" + what + ")");
  }
  if (decoded.empty()) {
    throw InputError(name + ": corrupt or truncated " + header.format + " data");
  }
  if (static_cast<int64_t>(decoded.cols) * decoded.rows > options.max_pixels) {
    throw InputError(name + ": image is " + std::to_string(decoded.cols) + "x" +
                     std::to_string(decoded.rows) + " pixels, over the --max-pixels limit of " +
                     std::to_string(options.max_pixels));
  }
  ImageU8 rgb = to_rgb8(decoded, name);
  // TIFF is the exception: libtiff (under both OpenCV and Pillow) already returns the pixels in
  // display orientation, so the tag must not be applied a second time.
  if (options.apply_exif_orientation && header.format != "TIFF") {
    rgb = apply_orientation(rgb, io::read_exif_orientation(bytes.data(), bytes.size()));
  }
  return rgb;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::vector<uint8_t> bytes;
  if (path == "-") {
    uint8_t chunk[1 << 16];
    size_t n = 0;
    while ((n = std::fread(chunk, 1, sizeof(chunk), stdin)) > 0)
      bytes.insert(bytes.end(), chunk, chunk + n);
    if (std::ferror(stdin))
      throw InputError(std::string("stdin: read error (") + std::strerror(errno) + ")");
    if (bytes.empty()) throw InputError("stdin: empty input");
    return bytes;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  }
  if (S_ISDIR(st.st_mode)) throw InputError(path + ": is a directory, not an image file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  if (S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size));
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError(path + ": read error");
  return bytes;
}

ImageU8 load_image(const std::string& path, const DecodeOptions& options) {
  return decode_image(read_file_bytes(path), path == "-" ? "stdin" : path, options);
}

void save_png(const ImageU8& image, const std::string& path) {
  if (image.empty()) throw InputError(path + ": cannot write an empty image");
  quiet_opencv_logging();
  cv::Mat bgr(image.height, image.width, CV_8UC3);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* in = image.px(0, y);
    uint8_t* out = bgr.ptr<uint8_t>(y);
    for (int x = 0; x < image.width; ++x, in += 3, out += 3) {
      out[0] = in[2];
      out[1] = in[1];
      out[2] = in[0];
    }
  }
  std::vector<uint8_t> encoded;
  try {
    if (!cv::imencode(".png", bgr, encoded)) throw InputError(path + ": PNG encoding failed");
  } catch (const cv::Exception& e) {
    throw InputError(path + ": PNG encoding failed (" + e.err + ")");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path + ": cannot write (" + std::strerror(errno) + ")");
  out.write(reinterpret_cast<const char*>(encoded.data()),
            static_cast<std::streamsize>(encoded.size()));
  out.close();
  if (!out) throw InputError(path + ": write failed (" + std::strerror(errno) + ")");
}

}  // namespace ocr
