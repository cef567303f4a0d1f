// Binary PGM (P5) and PPM (P6). The header is "P5" or "P6", then width,
// height and maxval as decimal numbers separated by whitespace and
// '#' comments, then one whitespace byte, then the samples (one byte
// each when maxval < 256, else two, most significant first).
#include <cctype>

#include "embed/image_internal.h"

namespace facevec::embed::internal {
namespace {

constexpr int64_t kMaxValue = 65535;
constexpr int64_t kLargestOneByteValue = 255;
constexpr int kDecimalBase = 10;
// Numbers beyond this are reported as too large without being parsed
// further (any side above it fails the size limits anyway).
constexpr int64_t kNumberCeiling = int64_t{1} << 40;
constexpr size_t kMagicBytes = 2;
constexpr int kBitsPerByte = 8;

struct header_parser {
    std::span<const uint8_t> bytes;
    size_t pos = kMagicBytes;

    void skip_space_and_comments() {
        while (pos < bytes.size()) {
            if (bytes[pos] == '#') {
                while (pos < bytes.size() && bytes[pos] != '\n')
                    ++pos;
            } else if (std::isspace(bytes[pos]) != 0) {
                ++pos;
            } else {
                return;
            }
        }
    }

    // The next number, or -1 when there is none here.
    int64_t number() {
        skip_space_and_comments();
        if (pos >= bytes.size() || std::isdigit(bytes[pos]) == 0)
            return -1;
        int64_t value = 0;
        while (pos < bytes.size() && std::isdigit(bytes[pos]) != 0) {
            if (value < kNumberCeiling) {
                value = value * kDecimalBase + (bytes[pos] - '0');
            }
            ++pos;
        }
        return value;
    }
};

}  // namespace

result<image> decode_pnm(std::span<const uint8_t> bytes,
                         const std::string &name, const decode_options &opts) {
    bool colour = bytes[1] == '6';
    int channels = colour ? 3 : 1;
    const char *kind = colour ? "PPM" : "PGM";

    header_parser p{bytes};
    int64_t width = p.number();
    int64_t height = p.number();
    int64_t max_value = p.number();
    if (width < 0 || height < 0 || max_value < 0) {
        return corruption(name + ": " + kind + " header is " +
                          (p.pos >= bytes.size() ? "truncated" : "malformed"));
    }
    if (max_value == 0 || max_value > kMaxValue) {
        return corruption(name + ": " + kind + " maxval " +
                          std::to_string(max_value) + " is not in 1..65535");
    }
    if (p.pos >= bytes.size() || std::isspace(bytes[p.pos]) == 0) {
        return corruption(name + ": " + kind + " header is malformed");
    }
    ++p.pos;  // the single whitespace byte before the samples
    FACEVEC_RETURN_IF_ERROR(check_dimensions(name, width, height, opts));

    int sample_bytes = max_value > kLargestOneByteValue ? 2 : 1;
    size_t samples = static_cast<size_t>(width * height) * channels;
    size_t needed = samples * sample_bytes;
    size_t available = bytes.size() - p.pos;
    if (available < needed) {
        return corruption(name + ": truncated " + kind + ": " +
                          std::to_string(available) + " of " +
                          std::to_string(needed) + " bytes of pixel data");
    }

    image out;
    out.width = static_cast<int>(width);
    out.height = static_cast<int>(height);
    out.rgb.resize(static_cast<size_t>(width * height) * 3);
    const uint8_t *src = bytes.data() + p.pos;
    auto max = static_cast<uint32_t>(max_value);
    for (size_t i = 0; i < samples; ++i) {
        uint32_t v = src[i * sample_bytes];
        if (sample_bytes == 2)
            v = (v << kBitsPerByte) | src[i * 2 + 1];
        uint8_t v8 = to_8bit(std::min(v, max), max);
        if (colour) {
            out.rgb[i] = v8;
        } else {
            out.rgb[i * 3] = out.rgb[i * 3 + 1] = out.rgb[i * 3 + 2] = v8;
        }
    }
    return out;
}

}  // namespace facevec::embed::internal
