// The embedding head: a small network trained on top of a frozen backbone.
//
// x (input_dim) -> fc1 -> [ReLU -> fc2] -> L2 normalisation -> y
// (output_dim, unit length). With hidden_dim == 0 there is one layer, fc1,
// mapping input_dim to output_dim. Weights are stored as named tensors so
// the embedder's weights file can carry them:
//   fc1.weight [out1, input_dim]   fc1.bias [out1]
//   fc2.weight [output_dim, hidden_dim]   fc2.bias [output_dim]  (2 layers)
// All matrices are float32, row-major. Not thread-safe for training;
// embed() is const and may run from many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace facevec::train {

// A float32 tensor, row-major: data.size() == product of shape.
struct named_tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;
};

// How create() sets the weights.
enum class head_init {
    // Uniform in +-sqrt(6 / fan_in) (He uniform): a random projection.
    random,
    // One layer only: fc1.weight[i][i] = 1 for i < min(input, output
    // dim), every other weight 0, so the untrained head is the backbone's
    // output (its first output_dim components) L2-normalised.
    identity,
};

// "random" / "identity"; parse errors (invalid_argument) quote the name.
const char *head_init_name(head_init i);
result<head_init> parse_head_init(const std::string &name);

struct head_config {
    size_t input_dim = 0;
    size_t hidden_dim = 0;  // 0: a single fully connected layer
    size_t output_dim = 128;
    bool relu = true;  // ReLU between the two layers (ignored for one)
    head_init init = head_init::random;
};

// What forward_train keeps for backward: n rows of each stage.
struct head_activations {
    size_t n = 0;
    const float *x = nullptr;  // n x input_dim, borrowed from the caller
    std::vector<float> z1;     // n x out1, fc1 output
    std::vector<float> a1;     // n x hidden_dim, after ReLU (2 layers)
    std::vector<float> z;      // n x output_dim, before normalisation
    std::vector<float> norm;   // n, |z| per row
    std::vector<float> y;      // n x output_dim, unit rows
};

class embedding_head {
  public:
    // A head with weights set by config.init (random ones drawn by a
    // generator seeded with `seed`) and zero biases. Errors
    // (invalid_argument): a zero input or output dim, identity init with
    // a hidden layer.
    static result<embedding_head> create(const head_config &config,
                                         uint64_t seed);

    // Rebuilds a head from tensors named as above; the config is read from
    // their shapes (relu as given). Errors (invalid_argument): a missing
    // tensor, a shape that disagrees, data of the wrong size, a non-finite
    // weight (names the tensor).
    static result<embedding_head> from_tensors(
        const std::vector<named_tensor> &tensors, bool relu = true);

    const head_config &config() const { return config_; }
    const std::vector<named_tensor> &tensors() const { return params_; }
    std::vector<named_tensor> &mutable_tensors() { return params_; }
    size_t parameter_count() const;
    // true when every weight and bias is finite.
    bool all_finite() const;

    // n x input_dim floats -> n x output_dim unit-length rows in `out`.
    void embed(const float *x, size_t n, float *out) const;

    // Forward pass keeping what backward needs; acts->y holds the output.
    // x must outlive acts.
    void forward_train(const float *x, size_t n, head_activations *acts) const;

    // Gradients of the loss w.r.t. every tensor (same order and sizes as
    // tensors()), given dL/dy (n x output_dim). Overwrites `grads`.
    void backward(const head_activations &acts, const float *grad_y,
                  std::vector<std::vector<float>> *grads) const;

  private:
    head_config config_;
    std::vector<named_tensor> params_;
    bool two_layers() const { return config_.hidden_dim > 0; }
    void forward(const float *x, size_t n, head_activations *acts) const;
};

// A head in its own small file: "FVHEAD1\n", an 8-byte little-endian
// length, a JSON description (config, tensor names, shapes and offsets,
// an FNV-1a checksum of the data, and the caller's `metadata`), then the
// float32 data. Written to path.tmp then renamed. Errors: invalid_argument
// when a weight is NaN or Inf (nothing is written), io_error.
status save_head(const std::string &path, const embedding_head &head,
                 const nlohmann::json &metadata = nlohmann::json::object());

struct loaded_head {
    embedding_head head;
    nlohmann::json metadata;
};

// Reads a file written by save_head. Errors: not_found, io_error,
// corruption (bad magic, truncated, checksum mismatch, bad JSON),
// invalid_argument from from_tensors.
result<loaded_head> load_head(const std::string &path);

}  // namespace facevec::train
