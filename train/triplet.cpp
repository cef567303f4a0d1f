#include "train/triplet.h"

#include <algorithm>
#include <limits>

#include "train/eval.h"

namespace facevec::train {
namespace {

constexpr float kGradFactor = 2.0f;  // d/dx |x - y|^2 = 2 (x - y)

// The nearest negative of `a` with lo < d(a, n) < hi, or n when none.
size_t nearest_negative_in(std::span<const float> d,
                           std::span<const int> labels, size_t a, float lo,
                           float hi) {
    const size_t n = labels.size();
    size_t best = n;
    float best_d = std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < n; ++j) {
        if (labels[j] == labels[a])
            continue;
        const float dj = d[a * n + j];
        if (dj > lo && dj < hi && dj < best_d) {
            best = j;
            best_d = dj;
        }
    }
    return best;
}

void mine_semi_hard(std::span<const float> d, std::span<const int> labels,
                    float margin, std::vector<triplet> *out) {
    const size_t n = labels.size();
    for (size_t a = 0; a < n; ++a) {
        for (size_t p = 0; p < n; ++p) {
            if (p == a || labels[p] != labels[a])
                continue;
            const float dap = d[a * n + p];
            size_t neg = nearest_negative_in(d, labels, a, dap, dap + margin);
            if (neg < n)
                out->push_back({a, p, neg});
        }
    }
}

void mine_batch_hard(std::span<const float> d, std::span<const int> labels,
                     std::vector<triplet> *out) {
    const size_t n = labels.size();
    const float inf = std::numeric_limits<float>::infinity();
    for (size_t a = 0; a < n; ++a) {
        size_t pos = n;
        float pos_d = -inf;
        for (size_t p = 0; p < n; ++p) {
            if (p == a || labels[p] != labels[a])
                continue;
            if (d[a * n + p] > pos_d) {
                pos = p;
                pos_d = d[a * n + p];
            }
        }
        size_t neg = nearest_negative_in(d, labels, a, -inf, inf);
        if (pos < n && neg < n)
            out->push_back({a, pos, neg});
    }
}

}  // namespace

const char *mining_name(mining m) {
    return m == mining::semi_hard ? "semi-hard" : "batch-hard";
}

result<mining> parse_mining(const std::string &name) {
    if (name == "semi-hard")
        return mining::semi_hard;
    if (name == "batch-hard")
        return mining::batch_hard;
    return invalid_argument("mining '" + name +
                            "' is unknown; use semi-hard or batch-hard");
}

std::vector<float> pairwise_squared_l2(const float *e, size_t n, size_t dim) {
    std::vector<float> d(n * n, 0.0f);
    for (size_t i = 0; i < n; ++i) {
        for (size_t j = i + 1; j < n; ++j) {
            const float v = squared_l2(e + i * dim, e + j * dim, dim);
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    return d;
}

std::vector<triplet> mine_triplets(std::span<const float> distances,
                                   std::span<const int> labels, mining m,
                                   float margin) {
    FACEVEC_ASSERT(distances.size() == labels.size() * labels.size(),
                   "mine_triplets: distances must be n x n");
    std::vector<triplet> out;
    if (m == mining::semi_hard) {
        mine_semi_hard(distances, labels, margin, &out);
    } else {
        mine_batch_hard(distances, labels, &out);
    }
    return out;
}

triplet_loss_value triplet_loss(const float *e, size_t n, size_t dim,
                                std::span<const triplet> triplets, float margin,
                                float *grad) {
    triplet_loss_value v;
    v.triplets = triplets.size();
    if (grad != nullptr)
        std::fill(grad, grad + n * dim, 0.0f);
    if (triplets.empty())
        return v;

    const float scale = kGradFactor / static_cast<float>(triplets.size());
    for (const triplet &t : triplets) {
        FACEVEC_ASSERT(t.anchor < n && t.positive < n && t.negative < n,
                       "triplet_loss: index out of range");
        const float *a = e + t.anchor * dim;
        const float *p = e + t.positive * dim;
        const float *q = e + t.negative * dim;
        const float l = squared_l2(a, p, dim) - squared_l2(a, q, dim) + margin;
        if (l <= 0)
            continue;
        v.loss += l;
        ++v.active;
        if (grad == nullptr)
            continue;

        // d/da = 2 (q - p), d/dp = 2 (p - a), d/dq = 2 (a - q).
        float *ga = grad + t.anchor * dim;
        float *gp = grad + t.positive * dim;
        float *gq = grad + t.negative * dim;
        for (size_t k = 0; k < dim; ++k) {
            ga[k] += scale * (q[k] - p[k]);
            gp[k] += scale * (p[k] - a[k]);
            gq[k] += scale * (a[k] - q[k]);
        }
    }
    v.loss /= static_cast<double>(triplets.size());
    return v;
}

}  // namespace facevec::train
