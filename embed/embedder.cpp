#include "embed/embedder.h"

#include <cstdlib>
#include <filesystem>

#include "common/log.h"
#include "common/threading.h"
#include "embed/import_faceapi.h"
#include "embed/import_keras.h"
#include "embed/models.h"

namespace facevec::embed {
namespace {

namespace fs = std::filesystem;

constexpr const char *kCacheEnv = "FACEVEC_CACHE";
constexpr const char *kFetchHint = "run tools/fetch_models.sh";
constexpr size_t kFingerprintHexDigits = 16;

nlohmann::json spec_json(const preprocess_spec &s) {
    return {{"width", s.width},
            {"height", s.height},
            {"crop", static_cast<int>(s.crop)},
            {"crop_fraction", s.crop_fraction},
            {"order", s.order == channel_order::bgr ? "bgr" : "rgb"},
            {"mean", s.mean},
            {"scale", s.scale}};
}

// The face-api import from the cache, checksum checked.
result<weights_file> load_face_resnet() {
    fs::path dir = fs::path(model_cache_dir()) /
                   (std::string("face-api-") + kFaceApiVersion);
    fs::path manifest = dir / kFaceApiManifest;
    if (!fs::exists(manifest) || !fs::exists(dir / kFaceApiModel)) {
        return not_found("model face-resnet: weights not found in " +
                         dir.string() + " (" + kFetchHint + ")");
    }
    return import_faceapi(manifest.string(), kFaceApiModelSha256);
}

// Fills what a vgg16 weights file lacks: the ImageNet convolutions from
// the cached Keras file when present, then seeded He weights.
status complete_vgg16(weights_file &w, const network_desc &net, uint64_t seed,
                      std::vector<std::string> &notes) {
    if (!w.tensors.count("block1_conv1/weight")) {
        fs::path h5 = fs::path(model_cache_dir()) / kKerasVgg16File;
        if (fs::exists(h5)) {
            auto conv = import_keras_vgg16(h5.string());
            if (!conv)
                return conv.error();
            w.tensors.merge(*conv);
        }
    }
    auto added = fill_missing_weights(net, seed, w.tensors);
    size_t conv = 0, head = 0;
    for (const std::string &name : added) {
        if (!name.ends_with("/weight"))
            continue;
        (name.starts_with("head/") ? head : conv)++;
    }
    if (conv > 0) {
        notes.push_back("vgg16: the " + std::to_string(conv) +
                        " convolutions have random weights (He, seed " +
                        std::to_string(seed) + "): " + kKerasVgg16File +
                        " is not in " + model_cache_dir() +
                        "; embeddings are not meaningful for faces");
    }
    if (head > 0) {
        notes.push_back("vgg16: the embedding head (" + std::to_string(head) +
                        " fc layers) has random weights (He, seed " +
                        std::to_string(seed) +
                        "); train one and pass its weights file");
    }
    return status::ok();
}

}  // namespace

std::string model_cache_dir() {
    const char *v = std::getenv(kCacheEnv);
    if (v != nullptr && *v != '\0')
        return v;
    const char *home = std::getenv("HOME");
    return std::string(home != nullptr ? home : ".") + "/.cache/facevec";
}

struct embedder::impl {
    embedder_options opts;
    weights_file weights;
    model_desc model;
    std::unique_ptr<network> net;
    std::string fingerprint;
    std::vector<std::string> notes;

    status run(std::span<const float> input, int n,
               std::span<float> output) const {
        status st;
        run_compute([&] { st = net->run(input, n, output); });
        return st;
    }
};

embedder::embedder(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
embedder::~embedder() = default;

result<std::unique_ptr<embedder>> embedder::load(const std::string &model,
                                                 const embedder_options &opts) {
    FACEVEC_RETURN_IF_ERROR(check_precision(opts.prec));
    if (opts.max_batch < 1) {
        return invalid_argument("max_batch must be >= 1");
    }
    if (!opts.stage && opts.align != "none" && opts.align != "center") {
        return invalid_argument("align '" + opts.align +
                                "': expected none or center");
    }
    auto im = std::make_unique<impl>();
    im->opts = opts;

    // The weights: built-in name or file.
    if (model == kFaceResnet) {
        auto w = load_face_resnet();
        if (!w)
            return w.error();
        im->weights = std::move(w).value();
    } else if (model == kVgg16) {
        im->weights.architecture = kVgg16;
        im->weights.params = vgg16_params{}.to_json();
    } else if (fs::is_regular_file(model)) {
        auto w = read_weights(model);
        if (!w)
            return w.error();
        im->weights = std::move(w).value();
    } else {
        return not_found("model '" + model +
                         "': neither a built-in model (face-resnet, vgg16) "
                         "nor a weights file");
    }
    weights_file &w = im->weights;
    if (opts.input_size > 0) {
        if (w.architecture != kVgg16) {
            return invalid_argument(
                "input_size: only vgg16 takes another "
                "input size");
        }
        w.params["input_size"] = opts.input_size;
    }

    // The network and its preprocessing.
    auto desc = describe_model(w.architecture, w.params);
    if (!desc)
        return desc.error();
    im->model = std::move(desc).value();
    if (w.architecture == kVgg16) {
        FACEVEC_RETURN_IF_ERROR(
            complete_vgg16(w, im->model.net, opts.seed, im->notes));
    }
    if (!opts.output.empty()) {
        im->model.net.output = opts.output;
        im->model.net.l2_normalize = false;
    }
    if (!opts.stage && opts.align == "center") {
        im->model.pre.crop = crop_mode::center_fraction;
        im->model.pre.crop_fraction = kCenterCropFraction;
    }
    auto net = network::create(im->model.net, w.tensors, opts.prec);
    if (!net)
        return net.error();
    im->net = std::move(net).value();

    // The fingerprint: weights bytes, preprocessing, output.
    auto bytes = serialize_weights(w);
    if (!bytes)
        return bytes.error();
    std::string identity = sha256_hex(bytes->data(), bytes->size()) +
                           spec_json(im->model.pre).dump() + opts.output;
    std::string digest = sha256_hex(
        reinterpret_cast<const uint8_t *>(identity.data()), identity.size());
    im->fingerprint = w.architecture + "-" + precision_name(opts.prec) + "-" +
                      opts.align + "-" +
                      digest.substr(0, kFingerprintHexDigits);
    for (const std::string &note : im->notes)
        logger()->warn("{}", note);

    // Warm-up: primitives for batch 1 created and run once.
    std::unique_ptr<embedder> e(new embedder(std::move(im)));
    if (opts.warm_up) {
        std::vector<float> zeros(e->input_floats(), 0.0F);
        auto out = e->embed_tensors(zeros);
        if (!out)
            return out.error();
    }
    logger()->info("loaded {} ({}), fingerprint {}", model, e->architecture(),
                   e->fingerprint());
    return e;
}

result<std::vector<float>> embedder::prepare(const image &img,
                                             const std::string &name) const {
    const std::string &label = name.empty() ? std::string("image") : name;
    if (impl_->opts.stage) {
        auto face = impl_->opts.stage(img, label);
        if (!face)
            return face.error();
        return preprocess(*face, impl_->model.pre);
    }
    auto out = preprocess(img, impl_->model.pre);
    if (!out)
        return out.error().with_context(label);
    return out;
}

result<std::vector<float>> embedder::embed_tensors(
    std::span<const float> input) const {
    size_t per_item = input_floats();
    if (input.empty() || input.size() % per_item != 0) {
        return invalid_argument("embed: " + std::to_string(input.size()) +
                                " input floats is not a positive multiple of " +
                                std::to_string(per_item) + " (3 x " +
                                std::to_string(input_size()) + " x " +
                                std::to_string(input_size()) + ")");
    }
    size_t n = input.size() / per_item;
    std::vector<float> out(n * dim());
    for (size_t first = 0; first < n; first += impl_->opts.max_batch) {
        size_t count =
            std::min(n - first, static_cast<size_t>(impl_->opts.max_batch));
        FACEVEC_RETURN_IF_ERROR(impl_->run(
            input.subspan(first * per_item, count * per_item),
            static_cast<int>(count),
            std::span<float>(out).subspan(first * dim(), count * dim())));
    }
    return out;
}

result<std::vector<float>> embedder::embed(
    std::span<const image> images, std::span<const std::string> names) const {
    if (!names.empty() && names.size() != images.size()) {
        return invalid_argument("embed: " + std::to_string(names.size()) +
                                " names for " + std::to_string(images.size()) +
                                " images");
    }
    if (images.empty())
        return std::vector<float>{};
    std::vector<float> input(images.size() * input_floats());
    for (size_t i = 0; i < images.size(); ++i) {
        auto t = prepare(images[i], names.empty() ? "" : names[i]);
        if (!t)
            return t.error();
        std::copy(t->begin(), t->end(),
                  input.begin() + static_cast<long>(i * input_floats()));
    }
    return embed_tensors(input);
}

result<std::vector<float>> embedder::embed_one(const image &img,
                                               const std::string &name) const {
    auto t = prepare(img, name);
    if (!t)
        return t.error();
    return embed_tensors(*t);
}

int embedder::dim() const {
    return impl_->net->output_dim();
}
int embedder::input_floats() const {
    return impl_->net->input_floats();
}
int embedder::input_size() const {
    return impl_->model.net.height;
}
bool embedder::normalized() const {
    return impl_->model.net.l2_normalize;
}
precision embedder::prec() const {
    return impl_->opts.prec;
}
const std::string &embedder::architecture() const {
    return impl_->weights.architecture;
}
const preprocess_spec &embedder::preprocessing() const {
    return impl_->model.pre;
}
const std::string &embedder::fingerprint() const {
    return impl_->fingerprint;
}
bool embedder::pretrained() const {
    return impl_->notes.empty();
}
const std::vector<std::string> &embedder::notes() const {
    return impl_->notes;
}
const weights_file &embedder::weights() const {
    return impl_->weights;
}

}  // namespace facevec::embed
