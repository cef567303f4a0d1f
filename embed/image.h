// Decoded images: what every face enters facevec as.
//
// decode_* turn JPEG, PNG, PGM or PPM bytes (the format is detected from
// the bytes, never the file name) into 8-bit RGB with EXIF orientation
// applied. Errors name the file (or the caller's name for a buffer) and
// the reason.
//
// What is accepted and how it is converted:
//   - JPEG, baseline and progressive (libjpeg-turbo): gray, YCbCr, RGB,
//     CMYK and YCCK. CMYK/YCCK with an Adobe APP14 marker are taken as
//     inverted (Adobe's convention), without one as plain ink values.
//     Every libjpeg warning about the data (premature end, bad Huffman
//     code, ...) is an error, never a partly grey image.
//   - PNG (libpng): gray, gray + alpha, palette (with tRNS transparency),
//     RGB, RGBA, 1 to 16 bits, interlaced or not. bKGD and gAMA are
//     ignored.
//   - binary PGM (P5) and PPM (P6), maxval 1..65535.
//   - Gray is replicated to R, G and B. Samples deeper than 8 bits are
//     scaled to 0..255 with rounding: round(v * 255 / maxval).
//   - Alpha is composited onto kBackground (white) in 8-bit sRGB values:
//     out = round((c * a + 255 * (255 - a)) / 255). Fully transparent
//     pixels are white whatever colour they store.
//   - EXIF orientation (all 8 values) is applied, from JPEG APP1 and from
//     the PNG eXIf chunk, so the result is upright.
//
// Limits, checked from the header before any large allocation:
//   - files over kMaxFileBytes: resource_exhausted;
//   - width or height over kMaxImageSide, or width * height over
//     kMaxImagePixels: resource_exhausted naming the size and the cap;
//   - progressive JPEGs with more than kMaxJpegScans scans:
//     resource_exhausted (bounds the work a hostile file can cause);
//   - a shorter side below kMinImageSide: invalid_argument (too small to
//     hold a face; never a zero-size tensor). A 1 x 500 strip is refused.
//
// Error codes: not_found (no such file), io_error (unreadable file),
// corruption (empty, truncated or corrupt data), unsupported (another
// format, e.g. GIF, or ASCII PNM), resource_exhausted and invalid_argument
// as above. Messages read "<name>: <reason>".
//
// Thread-safety: every function is reentrant; nothing is shared.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::embed {

// Smallest accepted shorter side, in pixels, after orientation.
inline constexpr int kMinImageSide = 8;
// Largest accepted width or height, in pixels.
inline constexpr int kMaxImageSide = 16384;
// Largest accepted width * height (50 megapixels: 150 MB of RGB).
inline constexpr int64_t kMaxImagePixels = 50'000'000;
// Largest accepted number of scans in a progressive JPEG.
inline constexpr int kMaxJpegScans = 100;
// Largest accepted file or buffer, in bytes.
inline constexpr size_t kMaxFileBytes = size_t{256} << 20;
// Colour under transparent pixels.
inline constexpr uint8_t kBackground[3] = {255, 255, 255};

// 8-bit RGB, row-major, interleaved: width * height * 3 bytes.
struct image {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;
};

struct decode_options {
    // When > 0, the decoder may return an image whose shorter side is
    // smaller than the original but still >= min_side (JPEG DCT scaling),
    // because the caller will shrink it anyway. 0: full size.
    int min_side = 0;
    // When > 0, an image of more pixels is refused from its header,
    // before any decoding work (resource_exhausted naming both counts).
    // kMaxImagePixels applies in any case.
    uint64_t max_pixels = 0;
};

enum class image_format { unknown, jpeg, png, pgm, ppm };

// The format the leading bytes announce (magic numbers only).
image_format detect_format(std::span<const uint8_t> bytes);

// Decodes the file at `path` (UTF-8 or any bytes the file system takes).
result<image> decode_file(const std::string &path,
                          const decode_options &opts = {});
// Decodes an in-memory file; `name` stands for it in error messages.
result<image> decode_bytes(std::span<const uint8_t> bytes,
                           const std::string &name,
                           const decode_options &opts = {});

// Writes `img` to `path` as an 8-bit RGB PNG (replacing any file there).
// io_error naming the path when it cannot be written; invalid_argument
// when the image is empty or its buffer has the wrong size.
status write_png(const image &img, const std::string &path);

// `img` turned upright for an EXIF orientation value 1..8 (1: as is; 2:
// mirrored; 3: rotated 180; 4: flipped; 5: transposed; 6: rotated 90
// clockwise; 7: transversed; 8: rotated 90 counter-clockwise). Other
// values leave the image as is.
image apply_orientation(const image &img, int orientation);

}  // namespace facevec::embed
