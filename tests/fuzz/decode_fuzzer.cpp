// libFuzzer target: decode_bytes (and preprocessing of what it returns)
// must never crash, leak or read out of bounds, whatever the bytes.
#include <cstddef>
#include <cstdint>

#include "embed/image.h"
#include "embed/preprocess.h"

namespace {

// Decoded images up to this many pixels are also preprocessed.
constexpr int64_t kMaxPreprocessedPixels = 1 << 16;
constexpr int kScaledMinSide = 16;
// Network input sides 1..kMaxInputSide, chosen by the input's length so
// that the resize runs with many tap counts and both directions.
constexpr size_t kMaxInputSide = 97;

void check_image(const facevec::embed::image &img) {
    bool consistent =
        img.width >= facevec::embed::kMinImageSide &&
        img.height >= facevec::embed::kMinImageSide &&
        img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3;
    if (!consistent)
        __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::span<const uint8_t> bytes(data, size);
    facevec::embed::decode_options opts;
    // The last byte's low bit chooses the scaled JPEG path.
    if (size > 0 && (data[size - 1] & 1) != 0)
        opts.min_side = kScaledMinSide;

    auto img = facevec::embed::decode_bytes(bytes, "fuzz", opts);
    if (!img.is_ok())
        return 0;
    check_image(*img);

    if (int64_t{img->width} * img->height <= kMaxPreprocessedPixels) {
        facevec::embed::preprocess_spec spec;
        spec.width = static_cast<int>(1 + size % kMaxInputSide);
        spec.height =
            static_cast<int>(1 + (size / kMaxInputSide) % kMaxInputSide);
        spec.crop = facevec::embed::crop_mode::center_fraction;
        spec.crop_fraction = 0.5F;
        auto input = facevec::embed::preprocess(*img, spec);
        if (!input.is_ok())
            __builtin_trap();
    }
    return 0;
}
