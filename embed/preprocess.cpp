#include "embed/preprocess.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace facevec::embed {
namespace {

// Filter weights of a 1-D resampling from `in_size` samples starting at
// `in_start` to `out_size` samples: output i reads the `taps` inputs from
// first[i] with weights weights[i * taps + k]. Every output has the same
// number of taps (zero weights where the filter ends early), so the inner
// loops have a fixed length.
struct filter_taps {
    std::vector<int> first;
    std::vector<float> weights;
    int taps = 0;
};

// Triangle (bilinear) filter of radius 1, stretched by the shrink factor
// when shrinking so that every input sample contributes (antialiasing).
filter_taps make_taps(int in_start, int in_size, int out_size) {
    double scale = static_cast<double>(in_size) / out_size;
    double support = std::max(scale, 1.0);  // radius 1, stretched

    filter_taps t;
    // Samples within `support` of a centre: at most ceil(2 * support),
    // plus one against rounding.
    t.taps = std::min(in_size, static_cast<int>(std::ceil(2 * support)) + 1);
    t.first.resize(out_size);
    t.weights.assign(static_cast<size_t>(out_size) * t.taps, 0.0F);
    for (int i = 0; i < out_size; ++i) {
        double centre = (i + 0.5) * scale;
        int lo = static_cast<int>(std::floor(centre - support - 0.5)) + 1;
        lo = std::clamp(lo, 0, in_size - t.taps);

        double total = 0.0;
        float *w = &t.weights[static_cast<size_t>(i) * t.taps];
        for (int k = 0; k < t.taps; ++k) {
            double d = std::abs((lo + k + 0.5 - centre) / support);
            double weight = d < 1.0 ? 1.0 - d : 0.0;
            w[k] = static_cast<float>(weight);
            total += weight;
        }
        FACEVEC_ASSERT(total > 0.0, "empty resampling filter");
        for (int k = 0; k < t.taps; ++k)
            w[k] /= static_cast<float>(total);
        t.first[i] = in_start + lo;
    }
    return t;
}

// Horizontal resampling of one row of `in` floats (interleaved RGB) into
// out_w pixels of `dst`, with Taps known at compile time so the tap loop
// unrolls; Taps == 0 reads the count from `h`.
template <int Taps>
void resample_row_taps(const float *in, const filter_taps &h, int out_w,
                       float *dst) {
    const int taps = Taps > 0 ? Taps : h.taps;
    for (int x = 0; x < out_w; ++x) {
        const float *w = &h.weights[static_cast<size_t>(x) * taps];
        const float *s = in + static_cast<size_t>(h.first[x]) * 3;
        float r = 0.0F;
        float g = 0.0F;
        float b = 0.0F;
        for (int k = 0; k < taps; ++k) {
            r += w[k] * s[k * 3];
            g += w[k] * s[k * 3 + 1];
            b += w[k] * s[k * 3 + 2];
        }
        dst[x * 3] = r;
        dst[x * 3 + 1] = g;
        dst[x * 3 + 2] = b;
    }
}

// One row of interleaved RGB bytes resampled horizontally to `dst`
// (out_w * 3 floats); `row` is scratch for in_w * 3 floats.
void resample_row(const uint8_t *src, const filter_taps &h, int out_w,
                  float *row, int in_w, float *dst) {
    for (int i = 0; i < in_w * 3; ++i)
        row[i] = src[i];
    switch (h.taps) {
        case 2:
            return resample_row_taps<2>(row, h, out_w, dst);
        case 3:
            return resample_row_taps<3>(row, h, out_w, dst);
        case 4:
            return resample_row_taps<4>(row, h, out_w, dst);
        case 5:
            return resample_row_taps<5>(row, h, out_w, dst);
        case 6:
            return resample_row_taps<6>(row, h, out_w, dst);
        default:
            return resample_row_taps<0>(row, h, out_w, dst);
    }
}

// Resamples the `box` of `img` to out_w x out_h interleaved RGB floats in
// 0..255 (unrounded): a horizontal pass over the box's rows, then a
// vertical pass.
std::vector<float> resample(const image &img, const crop_box &box, int out_w,
                            int out_h) {
    filter_taps h = make_taps(box.x, box.width, out_w);
    filter_taps v = make_taps(box.y, box.height, out_h);
    size_t row_floats = static_cast<size_t>(out_w) * 3;

    std::vector<float> scratch(static_cast<size_t>(img.width) * 3);
    std::vector<float> rows(static_cast<size_t>(box.height) * row_floats);
    for (int y = 0; y < box.height; ++y) {
        const uint8_t *src =
            &img.rgb[static_cast<size_t>(box.y + y) * img.width * 3];
        resample_row(src, h, out_w, scratch.data(), img.width,
                     &rows[static_cast<size_t>(y) * row_floats]);
    }

    std::vector<float> out(static_cast<size_t>(out_h) * row_floats, 0.0F);
    for (int y = 0; y < out_h; ++y) {
        float *__restrict dst = &out[static_cast<size_t>(y) * row_floats];
        const float *w = &v.weights[static_cast<size_t>(y) * v.taps];
        for (int k = 0; k < v.taps; ++k) {
            const float *__restrict src =
                &rows[static_cast<size_t>(v.first[y] - box.y + k) * row_floats];
            const float wk = w[k];
            for (size_t i = 0; i < row_floats; ++i)
                dst[i] += wk * src[i];
        }
    }
    return out;
}

uint8_t to_byte(float value) {
    constexpr float kMaxByte = 255.0F;
    return static_cast<uint8_t>(std::lround(std::clamp(value, 0.0F, kMaxByte)));
}

bool box_inside(const crop_box &b, const image &img) {
    return b.width > 0 && b.height > 0 && b.x >= 0 && b.y >= 0 &&
           b.x <= img.width - b.width && b.y <= img.height - b.height;
}

std::string box_text(const crop_box &b) {
    return std::to_string(b.width) + "x" + std::to_string(b.height) + " at (" +
           std::to_string(b.x) + ", " + std::to_string(b.y) + ")";
}

std::string size_text(const image &img) {
    return std::to_string(img.width) + "x" + std::to_string(img.height);
}

status check_image(const image &img) {
    bool consistent =
        img.width > 0 && img.height > 0 &&
        img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3;
    if (!consistent) {
        return invalid_argument("image of " + size_text(img) + " with " +
                                std::to_string(img.rgb.size()) +
                                " bytes is empty or inconsistent");
    }
    if (std::min(img.width, img.height) < kMinImageSide) {
        return invalid_argument("image of " + size_text(img) +
                                " pixels is too small: the shorter side "
                                "must be at least " +
                                std::to_string(kMinImageSide) + " pixels");
    }
    return status::ok();
}

result<crop_box> region_for(const image &img, const preprocess_spec &spec) {
    switch (spec.crop) {
        case crop_mode::none:
            return crop_box{0, 0, img.width, img.height};
        case crop_mode::center_fraction:
            return center_crop_box(img.width, img.height, spec.crop_fraction);
        case crop_mode::box:
            if (!box_inside(spec.box, img)) {
                return invalid_argument("crop box " + box_text(spec.box) +
                                        " is not inside the image of " +
                                        size_text(img));
            }
            return spec.box;
    }
    return invalid_argument("unknown crop mode");
}

// Channel c of the spec's order is RGB channel source_channel(c).
int source_channel(const preprocess_spec &spec, int c) {
    constexpr int kLast = 2;
    return spec.order == channel_order::rgb ? c : kLast - c;
}

size_t tensor_index(const preprocess_spec &spec, int c, size_t pixel) {
    size_t plane = static_cast<size_t>(spec.width) * spec.height;
    return spec.layout == tensor_layout::nchw ? c * plane + pixel
                                              : pixel * 3 + c;
}

preprocess_spec make_spec(int side, channel_order order,
                          std::array<float, 3> mean,
                          std::array<float, 3> scale) {
    preprocess_spec s;
    s.width = side;
    s.height = side;
    s.order = order;
    s.mean = mean;
    s.scale = scale;
    return s;
}

// The models' input specs, kept here so that the decoders build without
// the network code (the fuzzer links only them); image_test checks that
// they equal the model descriptions in embed/models.cpp.
const std::map<std::string, preprocess_spec, std::less<>> &builtin_specs() {
    constexpr int kFaceResnetSide = 150;
    constexpr float kFaceResnetScale = 1.0F / 255.0F;
    constexpr int kVggSide = 224;
    static const std::map<std::string, preprocess_spec, std::less<>> kSpecs = {
        {"face-resnet",
         make_spec(kFaceResnetSide, channel_order::rgb,
                   {122.782F, 117.001F, 104.298F},
                   {kFaceResnetScale, kFaceResnetScale, kFaceResnetScale})},
        {"vgg16", make_spec(kVggSide, channel_order::bgr,
                            {103.939F, 116.779F, 123.68F}, {1.0F, 1.0F, 1.0F})},
    };
    return kSpecs;
}

}  // namespace

status validate(const preprocess_spec &spec) {
    auto bad = [](const std::string &what) {
        return invalid_argument("preprocess spec: " + what);
    };
    if (spec.width < 1 || spec.width > kMaxInputSide || spec.height < 1 ||
        spec.height > kMaxInputSide) {
        return bad("input size " + std::to_string(spec.width) + "x" +
                   std::to_string(spec.height) + " is not in 1.." +
                   std::to_string(kMaxInputSide));
    }
    if (spec.crop == crop_mode::center_fraction &&
        !(spec.crop_fraction > 0.0F && spec.crop_fraction <= 1.0F)) {
        return bad("crop_fraction " + std::to_string(spec.crop_fraction) +
                   " is not in (0, 1]");
    }
    for (float s : spec.scale) {
        if (!(std::isfinite(s) && s != 0.0F)) {
            return bad("scale " + std::to_string(s) + " is zero or not finite");
        }
    }
    for (float m : spec.mean) {
        if (!std::isfinite(m))
            return bad("mean is not finite");
    }
    return status::ok();
}

size_t input_floats(const preprocess_spec &spec) {
    return static_cast<size_t>(spec.width) * spec.height * 3;
}

int decode_min_side(const preprocess_spec &spec) {
    int needed = std::max(spec.width, spec.height);
    switch (spec.crop) {
        case crop_mode::none:
            return needed;
        case crop_mode::center_fraction:
            return static_cast<int>(std::ceil(needed / spec.crop_fraction));
        case crop_mode::box:
            return 0;
    }
    return 0;
}

status preprocess_into(const image &img, const preprocess_spec &spec,
                       std::span<float> out) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    FACEVEC_RETURN_IF_ERROR(check_image(img));
    if (out.size() != input_floats(spec)) {
        return invalid_argument("preprocess: output holds " +
                                std::to_string(out.size()) + " floats, " +
                                std::to_string(input_floats(spec)) + " needed");
    }
    auto region = region_for(img, spec);
    if (!region)
        return region.error();

    std::vector<float> rgb = resample(img, *region, spec.width, spec.height);
    size_t pixels = static_cast<size_t>(spec.width) * spec.height;
    for (int c = 0; c < 3; ++c) {
        const float *src = rgb.data() + source_channel(spec, c);
        const float mean = spec.mean[c];
        const float scale = spec.scale[c];
        if (spec.layout == tensor_layout::nchw) {
            float *plane = out.data() + c * pixels;
            for (size_t p = 0; p < pixels; ++p) {
                plane[p] = (src[p * 3] - mean) * scale;
            }
        } else {
            for (size_t p = 0; p < pixels; ++p) {
                out[p * 3 + c] = (src[p * 3] - mean) * scale;
            }
        }
    }
    return status::ok();
}

result<std::vector<float>> preprocess(const image &img,
                                      const preprocess_spec &spec) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    std::vector<float> out(input_floats(spec));
    FACEVEC_RETURN_IF_ERROR(preprocess_into(img, spec, out));
    return out;
}

result<image> input_to_image(std::span<const float> input,
                             const preprocess_spec &spec) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    if (input.size() != input_floats(spec)) {
        return invalid_argument(
            "network input holds " + std::to_string(input.size()) +
            " floats, " + std::to_string(input_floats(spec)) + " expected");
    }
    image out;
    out.width = spec.width;
    out.height = spec.height;
    out.rgb.resize(input.size());
    size_t pixels = static_cast<size_t>(spec.width) * spec.height;
    for (int c = 0; c < 3; ++c) {
        int dst = source_channel(spec, c);
        for (size_t p = 0; p < pixels; ++p) {
            float v = input[tensor_index(spec, c, p)];
            out.rgb[p * 3 + dst] = to_byte(v / spec.scale[c] + spec.mean[c]);
        }
    }
    return out;
}

crop_box center_crop_box(int width, int height, float fraction) {
    int shorter = std::min(width, height);
    int side = static_cast<int>(std::lround(shorter * fraction));
    side = std::clamp(side, 1, std::max(shorter, 1));
    return {(width - side) / 2, (height - side) / 2, side, side};
}

result<image> crop(const image &img, const crop_box &box) {
    if (!box_inside(box, img)) {
        return invalid_argument("crop box " + box_text(box) +
                                " is not inside the image of " +
                                size_text(img));
    }
    image out;
    out.width = box.width;
    out.height = box.height;
    out.rgb.resize(static_cast<size_t>(box.width) * box.height * 3);
    size_t row_bytes = static_cast<size_t>(box.width) * 3;
    for (int y = 0; y < box.height; ++y) {
        const uint8_t *src =
            &img.rgb[(static_cast<size_t>(box.y + y) * img.width + box.x) * 3];
        std::copy(src, src + row_bytes, &out.rgb[y * row_bytes]);
    }
    return out;
}

result<image> resize(const image &img, int width, int height) {
    bool consistent =
        img.width > 0 && img.height > 0 &&
        img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3;
    if (!consistent) {
        return invalid_argument("resize: the image of " + size_text(img) +
                                " is empty or inconsistent");
    }
    if (width < 1 || height < 1 || int64_t{width} * height > kMaxImagePixels) {
        return invalid_argument("resize: target " + std::to_string(width) +
                                "x" + std::to_string(height) +
                                " is empty or over " +
                                std::to_string(kMaxImagePixels) + " pixels");
    }
    std::vector<float> rgb =
        resample(img, {0, 0, img.width, img.height}, width, height);
    image out;
    out.width = width;
    out.height = height;
    out.rgb.resize(rgb.size());
    std::transform(rgb.begin(), rgb.end(), out.rgb.begin(), to_byte);
    return out;
}

const preprocess_spec *find_preprocess_spec(std::string_view name) {
    const auto &specs = builtin_specs();
    auto it = specs.find(name);
    return it == specs.end() ? nullptr : &it->second;
}

std::vector<std::string> preprocess_spec_names() {
    std::vector<std::string> names;
    for (const auto &[name, spec] : builtin_specs())
        names.push_back(name);
    return names;
}

}  // namespace facevec::embed
