#include "train/optimizer.h"

#include <cmath>
#include <numbers>

namespace facevec::train {
namespace {

bool decays(const named_tensor &t) {
    const std::string suffix = "weight";
    return t.name.size() >= suffix.size() &&
           t.name.compare(t.name.size() - suffix.size(), suffix.size(),
                          suffix) == 0;
}

bool in_unit(float v) {
    return v >= 0 && v < 1;
}
bool in_half_open_unit(float v) {
    return v > 0 && v <= 1;
}

}  // namespace

result<optimizer_kind> parse_optimizer(const std::string &name) {
    if (name == "adam")
        return optimizer_kind::adam;
    if (name == "sgd")
        return optimizer_kind::sgd;
    return invalid_argument("optimizer '" + name +
                            "' is unknown; use adam or sgd");
}

result<lr_schedule> parse_schedule(const std::string &name) {
    if (name == "constant")
        return lr_schedule::constant;
    if (name == "cosine")
        return lr_schedule::cosine;
    if (name == "step")
        return lr_schedule::step;
    return invalid_argument("schedule '" + name +
                            "' is unknown; use constant, cosine or step");
}

const char *optimizer_name(optimizer_kind k) {
    return k == optimizer_kind::adam ? "adam" : "sgd";
}

const char *schedule_name(lr_schedule s) {
    switch (s) {
        case lr_schedule::constant:
            return "constant";
        case lr_schedule::cosine:
            return "cosine";
        case lr_schedule::step:
            return "step";
    }
    return "unknown";
}

status validate(const optimizer_config &c) {
    if (!(std::isfinite(c.learning_rate) && c.learning_rate > 0)) {
        return invalid_argument("learning rate " +
                                std::to_string(c.learning_rate) +
                                " must be finite and > 0");
    }
    if (!(c.weight_decay >= 0)) {
        return invalid_argument(
            "weight decay " + std::to_string(c.weight_decay) + " must be >= 0");
    }
    if (!in_unit(c.momentum) || !in_unit(c.beta1) || !in_unit(c.beta2)) {
        return invalid_argument("momentum and Adam betas must be in [0, 1)");
    }
    if (!(c.epsilon > 0) || c.step_epochs < 1 ||
        !in_half_open_unit(c.step_gamma) ||
        !in_half_open_unit(c.min_lr_ratio)) {
        return invalid_argument(
            "epsilon must be > 0, step epochs >= 1, step gamma and the "
            "cosine floor ratio in (0, 1]");
    }
    return status::ok();
}

float scheduled_lr(const optimizer_config &c, double epoch, int total_epochs) {
    switch (c.schedule) {
        case lr_schedule::constant:
            return c.learning_rate;
        case lr_schedule::cosine: {
            const double t = total_epochs > 0 ? epoch / total_epochs : 0.0;
            const double w = (1 + std::cos(std::numbers::pi * t)) / 2;
            return static_cast<float>(
                c.learning_rate * (c.min_lr_ratio + (1 - c.min_lr_ratio) * w));
        }
        case lr_schedule::step: {
            const double k = std::floor(epoch / c.step_epochs);
            return static_cast<float>(c.learning_rate *
                                      std::pow(c.step_gamma, k));
        }
    }
    return c.learning_rate;
}

void optimizer::step(std::vector<named_tensor> &params,
                     const std::vector<std::vector<float>> &grads, float lr) {
    FACEVEC_ASSERT(params.size() == grads.size(), "optimizer: grads");
    if (first_.empty()) {
        for (const named_tensor &t : params) {
            first_.emplace_back(t.data.size(), 0.0f);
            second_.emplace_back(t.data.size(), 0.0f);
        }
    }
    ++steps_;
    const auto b1 = static_cast<double>(config_.beta1);
    const auto b2 = static_cast<double>(config_.beta2);
    const auto c1 = static_cast<float>(1 - std::pow(b1, steps_));
    const auto c2 = static_cast<float>(1 - std::pow(b2, steps_));

    for (size_t t = 0; t < params.size(); ++t) {
        std::vector<float> &w = params[t].data;
        const std::vector<float> &g = grads[t];
        FACEVEC_ASSERT(w.size() == g.size(), "optimizer: grad size");
        const float decay = decays(params[t]) ? config_.weight_decay : 0.0f;
        std::vector<float> &m = first_[t];
        std::vector<float> &v = second_[t];

        if (config_.kind == optimizer_kind::sgd) {
            for (size_t i = 0; i < w.size(); ++i) {
                m[i] = config_.momentum * m[i] + g[i] + decay * w[i];
                w[i] -= lr * m[i];
            }
            continue;
        }
        for (size_t i = 0; i < w.size(); ++i) {
            m[i] = config_.beta1 * m[i] + (1 - config_.beta1) * g[i];
            v[i] = config_.beta2 * v[i] + (1 - config_.beta2) * g[i] * g[i];
            const float mh = m[i] / c1;
            const float vh = v[i] / c2;
            w[i] -=
                lr * (mh / (std::sqrt(vh) + config_.epsilon) + decay * w[i]);
        }
    }
}

}  // namespace facevec::train
