#include "embed/models.h"

#include <cmath>
#include <random>

namespace facevec::embed {
namespace {

// face-resnet's input normalisation (mean RGB, then / 255).
constexpr std::array<float, 3> kFaceResnetMean = {122.782F, 117.001F, 104.298F};
constexpr float kFaceResnetScale = 1.0F / 255.0F;
constexpr int kFaceResnetSide = 150;
constexpr int kFaceResnetStemChannels = 32;
constexpr int kFaceResnetStemKernel = 7;
constexpr int kFaceResnetPoolKernel = 3;
constexpr int kFaceResnetDim = 128;
constexpr int kDownStride = 2;
constexpr int kShortcutPool = 2;
constexpr int kConvKernel = 3;
constexpr int kSamePad = 1;

// Keras VGG16 'caffe' preprocessing: BGR, ImageNet mean in BGR order.
constexpr std::array<float, 3> kVggMeanBgr = {103.939F, 116.779F, 123.68F};
constexpr int kVggPool = 2;
constexpr int kVggMinSide = 32;
constexpr int kVggBlocks[5][2] = {
    {2, 64}, {2, 128}, {3, 256}, {3, 512}, {3, 512}};

layer_desc conv(const std::string &name, const std::string &input, int channels,
                int kernel, int stride, int pad, bool relu) {
    layer_desc l;
    l.kind = layer_kind::conv;
    l.name = name;
    l.input = input;
    l.channels = channels;
    l.kernel = kernel;
    l.stride = stride;
    l.pad_begin = l.pad_end = pad;
    l.relu = relu;
    return l;
}

// Two 3x3 'same' convs; the block input is added before the last ReLU.
void residual(network_desc &d, const std::string &name,
              const std::string &input, int channels) {
    d.layers.push_back(
        conv(name + "/conv1", input, channels, kConvKernel, 1, kSamePad, true));
    layer_desc c2 =
        conv(name + "/conv2", "", channels, kConvKernel, 1, kSamePad, true);
    c2.second = input;
    d.layers.push_back(c2);
}

// A stride-2 'valid' conv then a 'same' conv; the shortcut is a 2x2/2
// average pool of the input padded with zero channels. Where the conv
// path comes out one pixel smaller than the pooled path, it is padded
// with zeros at the bottom/right before the add.
void residual_down(network_desc &d, const std::string &name,
                   const std::string &input, const tensor_shape &in,
                   int channels) {
    layer_desc pool;
    pool.kind = layer_kind::avg_pool;
    pool.name = name + "/shortcut_pool";
    pool.input = input;
    pool.kernel = pool.stride = kShortcutPool;
    d.layers.push_back(pool);
    std::string shortcut = pool.name;
    if (channels != in.channels) {
        layer_desc pad;
        pad.kind = layer_kind::pad;
        pad.name = name + "/shortcut_pad";
        pad.channels = channels;
        d.layers.push_back(pad);
        shortcut = pad.name;
    }

    int pooled = (in.height - kShortcutPool) / kShortcutPool + 1;
    int convolved = (in.height - kConvKernel) / kDownStride + 1;
    d.layers.push_back(conv(name + "/conv1", input, channels, kConvKernel,
                            kDownStride, 0, true));
    layer_desc c2 = conv(name + "/conv2", "", channels, kConvKernel, 1,
                         kSamePad, convolved == pooled);
    if (convolved == pooled) {
        c2.second = shortcut;
        d.layers.push_back(c2);
        return;
    }
    d.layers.push_back(c2);
    layer_desc pad;
    pad.kind = layer_kind::pad;
    pad.name = name + "/conv2_pad";
    pad.channels = channels;
    pad.pad_end = pooled - convolved;
    d.layers.push_back(pad);
    layer_desc add;
    add.kind = layer_kind::add;
    add.name = name + "/add";
    add.second = shortcut;
    add.relu = true;
    d.layers.push_back(add);
}

void add_layer_weights(tensor_map &w, const std::string &name,
                       std::vector<int64_t> shape, int64_t fan_in,
                       std::mt19937_64 &rng) {
    tensor t;
    t.shape = std::move(shape);
    t.data.resize(t.elements());
    std::normal_distribution<float> dist(
        0.0F, static_cast<float>(std::sqrt(2.0 / fan_in)));
    for (float &v : t.data)
        v = dist(rng);
    w[name] = std::move(t);
}

// The embedding head after the current last layer: fc "head/fc1"
// (hidden, ReLU) when hidden > 0, fc "head/fc2" (dim), L2 normalisation.
void append_head(network_desc &d, int hidden, int dim) {
    if (hidden > 0) {
        layer_desc fc1;
        fc1.kind = layer_kind::inner_product;
        fc1.name = kHeadFc1;
        fc1.channels = hidden;
        fc1.relu = true;
        d.layers.push_back(fc1);
    }
    layer_desc fc2;
    fc2.kind = layer_kind::inner_product;
    fc2.name = kHeadFc2;
    fc2.channels = dim;
    d.layers.push_back(fc2);
    d.l2_normalize = true;
}

// Reads the integer params[key] into `field` when present; invalid_argument
// naming the architecture and key when it is not an integer in lo..hi.
status read_int_param(const nlohmann::json &params, const char *architecture,
                      const char *key, int lo, int hi, int &field) {
    if (!params.is_object() || !params.contains(key)) {
        return status::ok();
    }
    const auto &v = params.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < lo ||
        v.get<int64_t>() > hi) {
        return invalid_argument(std::string(architecture) + " parameter " +
                                key + ": " + v.dump() +
                                " is not an integer in " + std::to_string(lo) +
                                ".." + std::to_string(hi));
    }
    field = v.get<int>();
    return status::ok();
}

}  // namespace

nlohmann::json vgg16_params::to_json() const {
    return {{"input_size", input_size}, {"dim", dim}, {"hidden", hidden}};
}

result<vgg16_params> parse_vgg16_params(const nlohmann::json &params) {
    vgg16_params p;
    FACEVEC_RETURN_IF_ERROR(read_int_param(params, kVgg16, "input_size",
                                           kVggMinSide, kMaxInputSide,
                                           p.input_size));
    FACEVEC_RETURN_IF_ERROR(
        read_int_param(params, kVgg16, "dim", 1, kMaxInputSide, p.dim));
    FACEVEC_RETURN_IF_ERROR(
        read_int_param(params, kVgg16, "hidden", 0, kMaxInputSide, p.hidden));
    return p;
}

nlohmann::json face_resnet_params::to_json() const {
    if (dim == 0)
        return nlohmann::json::object();
    return {{"dim", dim}, {"hidden", hidden}};
}

result<face_resnet_params> parse_face_resnet_params(
    const nlohmann::json &params) {
    face_resnet_params p;
    FACEVEC_RETURN_IF_ERROR(
        read_int_param(params, kFaceResnet, "dim", 1, kMaxHeadWidth, p.dim));
    FACEVEC_RETURN_IF_ERROR(read_int_param(params, kFaceResnet, "hidden", 0,
                                           kMaxHeadWidth, p.hidden));
    if (p.dim == 0 && params.is_object() && params.contains("hidden")) {
        return invalid_argument(
            "face-resnet parameter hidden: given without dim (a head needs "
            "its output size)");
    }
    return p;
}

network_desc face_resnet_network(const face_resnet_params &p) {
    network_desc d;
    d.architecture = kFaceResnet;
    d.channels = 3;
    d.height = d.width = kFaceResnetSide;

    d.layers.push_back(conv("conv32_down", "input", kFaceResnetStemChannels,
                            kFaceResnetStemKernel, kDownStride, 0, true));
    layer_desc pool;
    pool.kind = layer_kind::max_pool;
    pool.name = "pool";
    pool.kernel = kFaceResnetPoolKernel;
    pool.stride = kDownStride;
    d.layers.push_back(pool);

    // Stages: (block name, channels, down-sampling first?).
    struct block {
        const char *name;
        int channels;
        bool down;
    };
    const block blocks[] = {
        {"conv32_1", 32, false},     {"conv32_2", 32, false},
        {"conv32_3", 32, false},     {"conv64_down", 64, true},
        {"conv64_1", 64, false},     {"conv64_2", 64, false},
        {"conv64_3", 64, false},     {"conv128_down", 128, true},
        {"conv128_1", 128, false},   {"conv128_2", 128, false},
        {"conv256_down", 256, true}, {"conv256_1", 256, false},
        {"conv256_2", 256, false},   {"conv256_down_out", 256, true},
    };
    std::string last = "pool";
    for (const block &b : blocks) {
        if (b.down) {
            auto shapes = infer_shapes(d);
            FACEVEC_ASSERT(shapes.is_ok(), shapes.error().to_string());
            residual_down(d, b.name, last, shapes->at(last), b.channels);
        } else {
            residual(d, b.name, last, b.channels);
        }
        last = d.layers.back().name;
    }

    layer_desc gap;
    gap.kind = layer_kind::global_avg_pool;
    gap.name = "global_pool";
    d.layers.push_back(gap);
    layer_desc fc;
    fc.kind = layer_kind::inner_product;
    fc.name = "fc";
    fc.channels = kFaceResnetDim;
    d.layers.push_back(fc);
    if (p.dim > 0)
        append_head(d, p.hidden, p.dim);
    return d;
}

preprocess_spec face_resnet_preprocess() {
    preprocess_spec s;
    s.width = s.height = kFaceResnetSide;
    s.order = channel_order::rgb;
    s.mean = kFaceResnetMean;
    s.scale = {kFaceResnetScale, kFaceResnetScale, kFaceResnetScale};
    return s;
}

network_desc vgg16_network(const vgg16_params &p) {
    network_desc d;
    d.architecture = kVgg16;
    d.channels = 3;
    d.height = d.width = p.input_size;
    int block_index = 1;
    for (const auto &[convs, channels] : kVggBlocks) {
        std::string block = "block" + std::to_string(block_index++);
        for (int c = 1; c <= convs; ++c) {
            d.layers.push_back(conv(block + "_conv" + std::to_string(c), "",
                                    channels, kConvKernel, 1, kSamePad, true));
        }
        layer_desc pool;
        pool.kind = layer_kind::max_pool;
        pool.name = block + "_pool";
        pool.kernel = pool.stride = kVggPool;
        d.layers.push_back(pool);
    }
    layer_desc gap;
    gap.kind = layer_kind::global_avg_pool;
    gap.name = kVgg16Features;
    d.layers.push_back(gap);
    append_head(d, p.hidden, p.dim);
    return d;
}

preprocess_spec vgg16_preprocess(int input_size) {
    preprocess_spec s;
    s.width = s.height = input_size;
    s.order = channel_order::bgr;
    s.mean = kVggMeanBgr;
    return s;
}

result<model_desc> describe_model(const std::string &architecture,
                                  const nlohmann::json &params) {
    if (architecture == kFaceResnet) {
        auto p = parse_face_resnet_params(params);
        if (!p)
            return p.error();
        return model_desc{face_resnet_network(*p), face_resnet_preprocess()};
    }
    if (architecture == kVgg16) {
        auto p = parse_vgg16_params(params);
        if (!p)
            return p.error();
        return model_desc{vgg16_network(*p), vgg16_preprocess(p->input_size)};
    }
    return status(error_code::unsupported,
                  "architecture '" + architecture +
                      "' is unknown (facevec runs face-resnet and vgg16)");
}

std::vector<std::string> fill_missing_weights(const network_desc &d,
                                              uint64_t seed,
                                              tensor_map &weights) {
    auto specs = required_weights(d);
    FACEVEC_ASSERT(specs.is_ok(), specs.error().to_string());
    std::mt19937_64 rng(seed);
    std::vector<std::string> added;
    for (const weight_spec &s : *specs) {
        if (weights.count(s.name) || s.name.ends_with("/scale") ||
            s.name.ends_with("/shift")) {
            continue;
        }
        if (s.optional) {
            tensor zero;
            zero.shape = s.shape;
            zero.data.assign(zero.elements(), 0.0F);
            weights[s.name] = std::move(zero);
        } else {
            int64_t fan_in = 1;
            for (size_t i = 1; i < s.shape.size(); ++i)
                fan_in *= s.shape[i];
            add_layer_weights(weights, s.name, s.shape, fan_in, rng);
        }
        added.push_back(s.name);
    }
    return added;
}

}  // namespace facevec::embed
