// Optimisers and learning-rate schedules for the embedding head.
//
// Adam uses decoupled weight decay (AdamW: w -= lr * decay * w beside the
// Adam step); SGD adds decay * w to the gradient, then applies momentum.
// Decay applies to tensors whose name ends in "weight", never to biases.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "train/head.h"

namespace facevec::train {

enum class optimizer_kind { adam, sgd };
enum class lr_schedule {
    constant,
    cosine,  // lr * (min_ratio + (1 - min_ratio) (1 + cos(pi t / T)) / 2)
    step,    // lr * gamma ^ floor(epoch / step_epochs)
};

struct optimizer_config {
    optimizer_kind kind = optimizer_kind::adam;
    float learning_rate = 1e-3f;
    float weight_decay = 5e-4f;
    float momentum = 0.9f;  // SGD
    float beta1 = 0.9f;     // Adam
    float beta2 = 0.999f;   // Adam
    float epsilon = 1e-8f;  // Adam
    lr_schedule schedule = lr_schedule::cosine;
    float min_lr_ratio = 0.01f;  // cosine floor, as a fraction of lr
    int step_epochs = 10;        // step schedule period
    float step_gamma = 0.1f;     // step schedule factor
};

// Errors (invalid_argument): unknown names, quoted.
result<optimizer_kind> parse_optimizer(const std::string &name);
result<lr_schedule> parse_schedule(const std::string &name);
const char *optimizer_name(optimizer_kind k);
const char *schedule_name(lr_schedule s);

// Errors (invalid_argument): lr <= 0 or not finite, negative decay,
// momentum or betas outside [0, 1), epsilon <= 0, step_epochs < 1, gamma
// or min ratio outside (0, 1].
status validate(const optimizer_config &c);

// The learning rate for `epoch` (0-based, fractional within an epoch
// allowed) of `total_epochs`.
float scheduled_lr(const optimizer_config &c, double epoch, int total_epochs);

class optimizer {
  public:
    explicit optimizer(const optimizer_config &c) : config_(c) {}

    // One update of every tensor of `params` with `grads` (same order and
    // sizes) at learning rate `lr`. The state is created on first use.
    void step(std::vector<named_tensor> &params,
              const std::vector<std::vector<float>> &grads, float lr);

  private:
    optimizer_config config_;
    long steps_ = 0;
    std::vector<std::vector<float>> first_;   // momentum or Adam m
    std::vector<std::vector<float>> second_;  // Adam v
};

}  // namespace facevec::train
