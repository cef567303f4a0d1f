// Triplet loss on squared L2 distances with online mining inside a batch.
//
// loss(a, p, n) = max(0, d(a, p) - d(a, n) + margin), d = squared L2.
// The batch loss is the mean over the mined triplets (0 when none).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::train {

enum class mining {
    // For every (anchor, positive) pair: the nearest negative with
    // d(a, p) < d(a, n) < d(a, p) + margin; pairs without one are skipped.
    semi_hard,
    // For every anchor with a positive: its farthest positive and its
    // nearest negative (both hardest), whatever the loss.
    batch_hard,
};

// "semi-hard" / "batch-hard".
const char *mining_name(mining m);
// Errors (invalid_argument): any other name (quoted in the message).
result<mining> parse_mining(const std::string &name);

struct triplet {
    size_t anchor = 0;
    size_t positive = 0;
    size_t negative = 0;
    bool operator==(const triplet &) const = default;
};

// n x n squared L2 distances between the rows of e (n x dim, row-major).
std::vector<float> pairwise_squared_l2(const float *e, size_t n, size_t dim);

// Mines triplets from an n x n distance matrix and n labels (equal labels:
// same person). Ties between candidate negatives go to the lowest index.
// Deterministic: anchors and positives in index order.
std::vector<triplet> mine_triplets(std::span<const float> distances,
                                   std::span<const int> labels, mining m,
                                   float margin);

struct triplet_loss_value {
    double loss = 0;  // mean over triplets
    size_t triplets = 0;
    size_t active = 0;  // triplets with a positive loss
};

// Loss of `triplets` over the embeddings e (n x dim) and, when grad is not
// null, dLoss/de written to grad (n x dim, overwritten).
triplet_loss_value triplet_loss(const float *e, size_t n, size_t dim,
                                std::span<const triplet> triplets, float margin,
                                float *grad);

}  // namespace facevec::train
