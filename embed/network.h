// The CNN executor: a small network description run on oneDNN.
//
// A network_desc lists layers in execution order. Each layer reads named
// tensors (the network input is "input"; a layer's output is named after
// the layer) and writes one. Supported layers: convolution with bias, a
// per-channel scale/shift (affine or batch norm, folded into the kernel at
// load), a residual tensor added before the ReLU and a fused ReLU; max and
// average pooling; global average pooling; zero padding of channels and
// of the bottom/right spatial border; element-wise add (+ ReLU); inner
// product (+ ReLU). The output may be L2-normalised.
//
// Primitives are created once per batch size with format_tag::any, so
// oneDNN picks each layer's layout; reorders run only where a consumer
// wants another layout than its producer wrote. Activation buffers are
// reused once a tensor is dead, and one user-mode scratchpad serves every
// primitive of a batch size.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "embed/weights.h"

namespace facevec::embed {

enum class precision {
    f32,   // float activations and weights
    bf16,  // bfloat16 activations and weights, f32 accumulation and output
};

// "f32" / "bf16".
const char *precision_name(precision p);

// Parses "f32" or "bf16"; invalid_argument naming the value otherwise.
result<precision> parse_precision(const std::string &name);

// ok when this CPU runs bf16 convolutions natively (AVX-512 BF16 or AMX,
// as oneDNN reports at run time); unsupported naming the ISA otherwise.
status check_precision(precision p);

enum class layer_kind {
    conv,             // weights "<name>/weight" O x I x k x k, optional
                      // "<name>/bias" [O], "<name>/scale" and
                      // "<name>/shift" [O] (y = (conv + bias) * scale +
                      // shift, before the residual and the ReLU)
    max_pool,         // kernel x kernel window, stride, padding
    avg_pool,         // as max_pool; padded cells are not counted
    global_avg_pool,  // mean over the whole spatial extent -> 1 x 1
    pad,              // zeros: channels up to `channels`, `pad_end`
                      // rows and columns after the bottom/right border
    add,              // input + second, then optional ReLU
    inner_product,    // weights "<name>/weight" O x (C*H*W), optional
                      // "<name>/bias" [O]
};

struct layer_desc {
    layer_kind kind = layer_kind::conv;
    std::string name;    // unique; names the output tensor
    std::string input;   // tensor read; empty: the previous layer's output
    std::string second;  // add: other operand; conv: residual added
                         // before the ReLU (same shape as the output)
    int channels = 0;    // conv, inner_product: outputs; pad: total
    int kernel = 1;      // conv and pooling window side
    int stride = 1;      // conv and pooling
    int pad_begin = 0;   // conv and pooling: top/left padding
    int pad_end = 0;     // conv and pooling: bottom/right padding; pad:
                         // zero rows and columns added bottom/right
    bool relu = false;   // conv, add, inner_product
};

struct network_desc {
    std::string architecture;
    int channels = 3;  // input: channels x height x width floats per item
    int height = 0;
    int width = 0;
    std::vector<layer_desc> layers;
    std::string output;         // tensor returned; empty: the last layer's
    bool l2_normalize = false;  // divide each output row by its L2 norm
};

// The shape of one item of a tensor: channels x height x width.
struct tensor_shape {
    int channels = 0;
    int height = 0;
    int width = 0;

    int64_t elements() const { return int64_t{channels} * height * width; }
    bool operator==(const tensor_shape &) const = default;
};

// Per-item shapes of every tensor of `d` ("input" included), checking that
// layers fit together: invalid_argument naming the layer when a name is
// unknown or duplicated, a shape is empty or operands differ.
result<std::map<std::string, tensor_shape>> infer_shapes(const network_desc &d);

// The weight tensors `d` needs, with their shapes; optional ones (bias,
// scale, shift) are listed with optional = true.
struct weight_spec {
    std::string name;
    std::vector<int64_t> shape;
    bool optional = false;
};
result<std::vector<weight_spec>> required_weights(const network_desc &d);

// Executes one network description. Not thread-safe: one run at a time
// (facevec::run_compute serialises the embedders' runs).
class network {
  public:
    // Validates `d` against `weights` (mismatch naming the tensor and the
    // shapes when one is missing or misshaped), folds scale/shift into the
    // kernels and keeps its own copy. unsupported when `p` is not
    // available on this CPU.
    static result<std::unique_ptr<network>> create(const network_desc &d,
                                                   const tensor_map &weights,
                                                   precision p);
    ~network();
    network(const network &) = delete;
    network &operator=(const network &) = delete;

    // Runs n items. `input`: n x channels x height x width floats (NCHW,
    // row-major); `output`: n x output_dim() floats, row-major. Creates
    // the primitives for batch size n on first use. invalid_argument when
    // n < 1 or a span has the wrong size; internal when oneDNN fails.
    status run(std::span<const float> input, int n, std::span<float> output);

    // Creates the primitives for batch size n without running them.
    status prepare(int n);

    const network_desc &desc() const;
    precision prec() const;
    int input_floats() const;  // per item
    int output_dim() const;    // per item
    // Batch sizes with primitives created; the oldest are dropped beyond
    // kMaxPlans.
    std::vector<int> prepared_batches() const;

    static constexpr size_t kMaxPlans = 4;

  private:
    struct impl;
    explicit network(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::embed
