// The built-in model descriptions: layers, weight names and
// preprocessing of each architecture facevec runs.
//
// face-resnet: dlib's face recognition ResNet as shipped (converted to
//   TF.js) by @vladmandic/face-api 1.7.15. 150 x 150 RGB in, 128-D out,
//   not L2-normalised. Input (pixel - mean RGB) / 255. A 7x7/2 conv and a
//   3x3/2 max pool, then residual blocks of two 3x3 convs at 32, 64, 128
//   and 256 channels; each down-sampling block convolves with stride 2
//   ('valid'), and its shortcut is a 2x2/2 average pool zero-padded to the
//   new channel count (and, where the conv output is one pixel smaller,
//   the conv output is zero-padded at the bottom/right). Global average
//   pooling and a 256 -> 128 fully connected layer without bias end it.
//   Every conv has a bias and a per-channel scale/shift. Optionally
//   (params "dim", "hidden", as a trained file exported by `facevec train
//   --backbone face-resnet --export-model` has them) the same embedding
//   head as vgg16's follows the 128-D output, L2-normalised; without
//   "dim" the network is the plain one above.
//
// vgg16: the 13 convolutions of VGG16 (3x3, 'same', ReLU, 2x2/2 max pool
//   after blocks 1-5), global average pooling ("features", 512-D), then an
//   embedding head: fc "head/fc1" (512 -> hidden, ReLU) and "head/fc2"
//   (hidden -> dim), L2-normalised; hidden = 0 leaves a single fc
//   "head/fc2" (512 -> dim). Input Keras 'caffe' style: BGR, ImageNet mean
//   subtracted, no scaling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "embed/network.h"
#include "embed/preprocess.h"
#include "embed/weights.h"

namespace facevec::embed {

inline constexpr const char *kFaceResnet = "face-resnet";
inline constexpr const char *kVgg16 = "vgg16";

// Output tensor of the VGG16 backbone (global average pool, 512-D): what
// the embedding head is trained on.
inline constexpr const char *kVgg16Features = "features";

// The embedding head's layers: "head/fc1" (input -> hidden, ReLU) then
// "head/fc2" (hidden -> dim), or "head/fc2" alone (input -> dim) when
// hidden is 0. Their tensors are "<layer>/weight" and "<layer>/bias".
inline constexpr const char *kHeadFc1 = "head/fc1";
inline constexpr const char *kHeadFc2 = "head/fc2";
// Widest head layer a params object may ask for.
inline constexpr int kMaxHeadWidth = 65536;

struct vgg16_params {
    int input_size = 224;  // square input side, 32..kMaxInputSide
    int dim = 128;         // embedding size
    int hidden = 256;      // head hidden width; 0: one fc layer

    // {"input_size": ..., "dim": ..., "hidden": ...}.
    nlohmann::json to_json() const;
};

// Reads vgg16_params from a weights file's params (missing keys keep their
// defaults); invalid_argument naming the key when a value is out of range.
result<vgg16_params> parse_vgg16_params(const nlohmann::json &params);

// face-resnet's optional embedding head; dim 0: none (the plain network).
struct face_resnet_params {
    int dim = 0;     // head output size, 0..kMaxHeadWidth
    int hidden = 0;  // head hidden width; 0: one fc layer

    // {"dim": ..., "hidden": ...}; {} without a head.
    nlohmann::json to_json() const;
};

// Reads face_resnet_params from a weights file's params (missing keys
// keep their defaults); invalid_argument naming the key when a value is
// not an integer in range, or "hidden" is given without "dim".
result<face_resnet_params> parse_face_resnet_params(
    const nlohmann::json &params);

// The plain network (128-D, not normalised), then the head `p` asks for.
network_desc face_resnet_network(const face_resnet_params &p = {});
preprocess_spec face_resnet_preprocess();

network_desc vgg16_network(const vgg16_params &p);
preprocess_spec vgg16_preprocess(int input_size);

// The network and preprocessing an architecture with `params` describes;
// unsupported naming the architecture when facevec does not know it.
struct model_desc {
    network_desc net;
    preprocess_spec pre;
};
result<model_desc> describe_model(const std::string &architecture,
                                  const nlohmann::json &params);

// Adds every weight `d` needs that `weights` lacks, He-initialised
// (normal, std sqrt(2 / fan_in)) from `seed`, biases zero; returns the
// names it added, in order. Deterministic for a given seed.
std::vector<std::string> fill_missing_weights(const network_desc &d,
                                              uint64_t seed,
                                              tensor_map &weights);

}  // namespace facevec::embed
