// Decoded images: what every face enters facevec as.
//
// decode_* turn JPEG, PNG, PGM or PPM bytes (the format is detected from
// the bytes, never the file name) into 8-bit RGB with EXIF orientation
// applied. Errors name the file (or the caller's name for a buffer) and
// the reason.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::embed {

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
};

result<image> decode_file(const std::string &path,
                          const decode_options &opts = {});
result<image> decode_bytes(std::span<const uint8_t> bytes,
                           const std::string &name,
                           const decode_options &opts = {});

}  // namespace facevec::embed
