// Preprocessing as data: how a decoded image becomes a network's input.
//
// Each model is described by a preprocess_spec (input size, crop, channel
// order, mean and scale), not by code. preprocess() applies it:
//
//   1. crop: none, a centred square whose side is a fraction of the
//      shorter side, or an explicit box in image pixels;
//   2. resize to width x height with a triangle (bilinear) filter whose
//      support grows with the shrink factor, so shrinking is antialiased;
//   3. per channel, value = (pixel - mean[c]) * scale[c], channels in the
//      spec's order (mean and scale are given in that order too);
//   4. written as 1 x 3 x height x width floats (NCHW, planar) or
//      1 x height x width x 3 floats (NHWC, interleaved).
//
// The resize is separable and in fixed point: weights in steps of 2^-14
// summing to exactly 1, exact integer sums. A vertical pass over the
// region's bytes gives rows of int16 in steps of 2^-7, then a horizontal
// pass sums those in int32; each sum becomes a float once, on its way
// into the tensor. Results are within 0.02 of the exact filter in 0..255
// units and a same-size input is copied exactly. SSE2, AVX2 or AVX-512
// (F, BW, VL, VBMI, VNNI), the widest the CPU has (chosen at run time;
// FACEVEC_SIMD=sse2 or FACEVEC_SIMD=avx2 in the environment holds it to
// that level); every variant gives the same floats.
//
// All functions are reentrant. Filter weights are cached per thread and
// (input, output) size pair, and each thread keeps one row of scratch (3
// int16 per input column, 4 floats per output column) for its later
// calls.
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "embed/image.h"

namespace facevec::embed {

// Largest width or height a spec may ask for.
inline constexpr int kMaxInputSide = 4096;

enum class crop_mode {
    none,             // the whole image, stretched to width x height
    center_fraction,  // centred square, side = crop_fraction * shorter side
    box,              // crop_box, in pixels of the decoded image
};

enum class channel_order { rgb, bgr };

enum class tensor_layout {
    nchw,  // 3 planes of height x width floats
    nhwc,  // height x width pixels of 3 floats
};

// A rectangle in image pixels: columns [x, x + width), rows [y, y + height).
struct crop_box {
    int x = 0;
    int y = 0;
    int width = 0;
    int height = 0;
};

struct preprocess_spec {
    int width = 0;   // network input width, 1..kMaxInputSide
    int height = 0;  // network input height, 1..kMaxInputSide
    crop_mode crop = crop_mode::none;
    float crop_fraction = 1.0F;  // center_fraction only: in (0, 1]
    crop_box box;                // box only: must lie inside the image
    channel_order order = channel_order::rgb;
    std::array<float, 3> mean = {0.0F, 0.0F, 0.0F};   // in `order`
    std::array<float, 3> scale = {1.0F, 1.0F, 1.0F};  // in `order`, != 0
    tensor_layout layout = tensor_layout::nchw;
};

// invalid_argument naming the field when the spec is unusable (sizes out
// of range, crop_fraction outside (0, 1], a zero scale).
status validate(const preprocess_spec &spec);

// 3 * spec.height * spec.width: the number of floats preprocess writes.
size_t input_floats(const preprocess_spec &spec);

// The min_side to pass to decode_file / decode_bytes (decode_options) for
// images meant for `spec`: after the crop the decoded image still has at
// least spec.width x spec.height pixels, so scaled JPEG decoding loses no
// detail the network would see. 0 (full size) for crop_mode::box, whose
// coordinates refer to the full-size image.
int decode_min_side(const preprocess_spec &spec);

// Applies `spec` to `img`, writing input_floats(spec) floats to `out`.
// Errors: invalid_argument when the spec is invalid, `out` has the wrong
// size, the image is smaller than kMinImageSide or the box leaves it.
status preprocess_into(const image &img, const preprocess_spec &spec,
                       std::span<float> out);

// As preprocess_into, into a new vector of input_floats(spec) floats.
result<std::vector<float>> preprocess(const image &img,
                                      const preprocess_spec &spec);

// The network input back as an 8-bit RGB picture of spec.width x
// spec.height (undoes scale, mean and channel order; values are rounded
// and clamped to 0..255). `input` holds input_floats(spec) floats in the
// spec's layout. For looking at what the network sees.
result<image> input_to_image(std::span<const float> input,
                             const preprocess_spec &spec);

// The centred square whose side is `fraction` of the shorter side of a
// width x height image (at least 1 pixel), fraction in (0, 1].
crop_box center_crop_box(int width, int height, float fraction);

// The pixels of `img` inside `box`. invalid_argument when the box is
// empty or not inside the image.
result<image> crop(const image &img, const crop_box &box);

// `img` resized to width x height: triangle filter, support scaled by the
// shrink factor when shrinking (antialiased), plain bilinear when
// enlarging; values rounded. invalid_argument when a side is < 1, the
// image is empty or the result would be over kMaxImagePixels.
result<image> resize(const image &img, int width, int height);

// The built-in spec called `name`, or nullptr when there is none:
//   "face-resnet": 150 x 150, no crop, RGB, mean (122.782, 117.001,
//                  104.298), scale 1/255 (dlib's face recognition ResNet);
//   "vgg16":       224 x 224, no crop, BGR, mean (103.939, 116.779,
//                  123.68), scale 1 (Keras 'caffe' preprocessing).
// The pointer stays valid for the life of the program.
const preprocess_spec *find_preprocess_spec(std::string_view name);

// The names find_preprocess_spec knows, sorted.
std::vector<std::string> preprocess_spec_names();

}  // namespace facevec::embed
