// Embedders: a model loaded by name or file, turning face images into
// embedding vectors.
//
// Thread-safety: an embedder is immutable after load(); embed*() may be
// called from any number of threads. Decoding, alignment and
// preprocessing run on the caller's thread; the network runs through
// facevec::run_compute (common/threading.h), one batch at a time on the
// process's compute thread, so concurrent callers never oversubscribe
// the cores.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "embed/image.h"
#include "embed/network.h"
#include "embed/preprocess.h"

namespace facevec::embed {

// Where pretrained weights are cached: $FACEVEC_CACHE, else
// $HOME/.cache/facevec (tools/fetch_models.sh fills it).
std::string model_cache_dir();

// The side of the centre square of align "center", as a fraction of the
// shorter image side: 120 of LFW's 250 px, the reference crop.
inline constexpr float kCenterCropFraction = 0.48F;

// Seed of the He-initialised weights used where no trained ones exist.
inline constexpr uint64_t kDefaultWeightSeed = 1;

// The alignment stage: turns a decoded photo into the face image the
// network sees (any size; preprocessing resizes it), or an error naming
// `name` and the reason (e.g. no face found). Must be thread-safe.
using align_stage =
    std::function<result<image>(const image &photo, const std::string &name)>;

struct embedder_options {
    precision prec = precision::f32;

    // "none": the image as is, resized when its size differs from the
    // network input; "center": the centred square of kCenterCropFraction
    // of the shorter side, resized. Another name (e.g. "auto") needs
    // `stage`. The name is part of the fingerprint.
    std::string align = "none";
    align_stage stage;  // when set, runs before preprocessing (no crop)

    int input_size = 0;  // vgg16 only: input side; 0 keeps the model's
    // Tensor returned instead of the embedding, e.g. kVgg16Features for
    // the VGG16 backbone features the head is trained on (not
    // normalised). Empty: the embedding.
    std::string output;
    int max_batch = 32;   // images per network run, >= 1
    bool warm_up = true;  // run one batch at load
    uint64_t seed = kDefaultWeightSeed;
};

class embedder {
  public:
    // Loads `model`: a built-in name, "face-resnet" (pretrained, from the
    // cache; see tools/fetch_models.sh) or "vgg16" (ImageNet convolutions
    // from the cached Keras file when present, else seeded He-initialised;
    // the head is always seeded He-initialised), or the path to a facevec
    // weights file (weights.h) of either architecture. Weights a vgg16
    // file lacks are filled the same way. Every such fill is logged as a
    // warning and listed by notes().
    // Errors: not_found naming the model or file (with the command that
    // fetches it); unsupported for bf16 on a CPU without it or an unknown
    // architecture; mismatch / corruption from the weights; invalid_argument
    // for bad options.
    static result<std::unique_ptr<embedder>> load(
        const std::string &model, const embedder_options &opts = {});
    ~embedder();
    embedder(const embedder &) = delete;
    embedder &operator=(const embedder &) = delete;

    // Embeds photos: n x dim() floats, row-major, in input order.
    // `names` (empty, or one per image) name the images in errors. The
    // first image that fails alignment or preprocessing fails the call
    // with its error (use embed_one per image to skip bad ones).
    result<std::vector<float>> embed(
        std::span<const image> images,
        std::span<const std::string> names = {}) const;

    // One photo: dim() floats.
    result<std::vector<float>> embed_one(const image &img,
                                         const std::string &name = "") const;

    // Embeds already preprocessed inputs: n x input_floats() floats
    // (n x 3 x H x W, NCHW) -> n x dim() floats. invalid_argument when the
    // size is not a multiple of input_floats().
    result<std::vector<float>> embed_tensors(
        std::span<const float> input) const;

    // Alignment + preprocessing of one photo: input_floats() floats.
    result<std::vector<float>> prepare(const image &img,
                                       const std::string &name = "") const;

    int dim() const;           // floats per embedding
    int input_floats() const;  // 3 x side x side
    int input_size() const;    // network input side in pixels
    bool normalized() const;   // rows have unit L2 norm
    precision prec() const;
    const std::string &architecture() const;  // "face-resnet", "vgg16"
    const preprocess_spec &preprocessing() const;

    // "<architecture>-<precision>-<align>-<16 hex>", the hex digits from
    // SHA-256 over the weights file's bytes, the preprocessing and the
    // output tensor. Equal fingerprints give equal embeddings.
    const std::string &fingerprint() const;

    // False when any weight is random (see notes()).
    bool pretrained() const;
    // Human-readable facts the user should know, e.g. "vgg16: 26
    // convolution weights are random (He, seed 1): ...". Empty for a fully
    // pretrained model.
    const std::vector<std::string> &notes() const;

    // The weights as loaded (all filled), e.g. to save with
    // write_weights.
    const weights_file &weights() const;

  private:
    struct impl;
    explicit embedder(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::embed
