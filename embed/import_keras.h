// Import of VGG16's ImageNet convolution weights from the Keras HDF5 file
// vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5.
#pragma once

#include <string>

#include "common/status.h"
#include "embed/weights.h"

namespace facevec::embed {

// The Keras file's name, looked for in the model cache.
inline constexpr const char *kKerasVgg16File =
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5";

// Reads the 13 convolutions of VGG16 from a Keras HDF5 weights file
// (Keras' layout: a group per layer, block1_conv1 .. block5_conv3, each
// holding the datasets <layer>/kernel:0, H x W x I x O, and
// <layer>/bias:0, O; any floating type). Returns them in facevec's names
// and layout: "<layer>/weight" O x I x H x W and "<layer>/bias".
// not_found naming the path when the file is absent; corruption when it
// is not HDF5; mismatch naming the dataset when one is missing or has
// the wrong shape.
result<tensor_map> import_keras_vgg16(const std::string &h5_path);

}  // namespace facevec::embed
