// Internals of image decoding shared by the per-format decoders. Not part
// of the public API.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"
#include "embed/image.h"

namespace facevec::embed::internal {

// ok, or the error for a width x height image: corruption when a side is
// not positive, resource_exhausted over kMaxImageSide / kMaxImagePixels,
// resource_exhausted over opts.max_pixels, invalid_argument when the
// shorter side is below kMinImageSide. Messages start with `name`.
status check_dimensions(const std::string &name, int64_t width, int64_t height,
                        const decode_options &opts);

// Each decoder returns the upright 8-bit RGB image or the error, with
// messages starting with `name`. `bytes` starts with the format's magic.
result<image> decode_jpeg(std::span<const uint8_t> bytes,
                          const std::string &name, const decode_options &opts);
result<image> decode_png(std::span<const uint8_t> bytes,
                         const std::string &name, const decode_options &opts);
result<image> decode_pnm(std::span<const uint8_t> bytes,
                         const std::string &name, const decode_options &opts);

// The orientation (1..8) stored in IFD0 of an EXIF block that starts with
// "Exif\0\0" (a JPEG APP1 payload); 1 when absent, unreadable or invalid.
int exif_orientation(std::span<const uint8_t> exif);

// round(value * 255 / max_value), for 0 <= value <= max_value <= 65535.
inline uint8_t to_8bit(uint32_t value, uint32_t max_value) {
    return static_cast<uint8_t>((value * 255U + max_value / 2) / max_value);
}

// A colour sample over kBackground's sample `bg` with 8-bit alpha.
inline uint8_t over_background(uint8_t colour, uint8_t alpha, uint8_t bg) {
    constexpr uint32_t kOpaque = 255;
    uint32_t sum = uint32_t{colour} * alpha + uint32_t{bg} * (kOpaque - alpha);
    return static_cast<uint8_t>((sum + kOpaque / 2) / kOpaque);
}

}  // namespace facevec::embed::internal
