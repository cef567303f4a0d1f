// Offline triplet training of the embedding head on frozen backbone
// features.
//
// Each batch holds P people with >= 2 images, K images each (fewer when a
// person has fewer), plus S images of single-image people that serve only
// as negatives. Triplets are mined online in the batch (triplet.h); the
// head (head.h) is updated by the optimiser (optimizer.h). After every
// epoch the head is validated on held-out people; the best epoch is kept
// and training stops early after `patience` epochs without improvement.
// A given seed gives the same run (own RNG, fixed reduction orders; BLAS
// products are deterministic for a fixed thread count).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "train/eval.h"
#include "train/features.h"
#include "train/head.h"
#include "train/optimizer.h"
#include "train/triplet.h"

namespace facevec::train {

// Pairs of rows of a feature set; same[i] != 0 for a genuine pair.
struct validation_pairs {
    std::vector<size_t> a;
    std::vector<size_t> b;
    std::vector<uint8_t> same;
};

// Up to `per_class` genuine pairs (sampled from all same-person row pairs)
// and as many impostor pairs (random rows of different people), drawn with
// `seed`. Errors (invalid_argument): no person with 2 rows, or a single
// person.
result<validation_pairs> make_validation_pairs(const feature_set &set,
                                               size_t per_class, uint64_t seed);

// The pairs of an LFW pairs file (e.g. pairsDevTest.txt, parsed by
// parse_lfw_pairs_file) as rows of a feature set whose row i holds the
// image rows[i]. `name` stands for the file in errors. Errors
// (invalid_argument): a pair image that no row holds (names the file, the
// pair's index, the person and the image number).
result<validation_pairs> lfw_validation_pairs(
    const lfw_pairs &pairs, const std::vector<image_ref> &rows,
    const std::string &name);

struct validation_set {
    feature_set set;
    validation_pairs pairs;
};

struct validation_metrics {
    double accuracy = 0;  // 10-fold mean (fold = pair index mod 10)
    double auc = 0;
    operating_point at_far_1e3;
    double rank1 = 0;  // gallery: first row of each person with >= 2 rows
};

// The backbone's own output: the validation features as they are,
// compared by squared L2. Errors as validate's.
result<validation_metrics> validate_features(const validation_set &val);

// Embeds the validation set with `head` and measures it. Errors
// (invalid_argument): the set's dim differs from the head's input, a pair
// index out of range, pairs lacking a genuine or an impostor pair.
result<validation_metrics> validate(const embedding_head &head,
                                    const validation_set &val);

struct train_config {
    head_config head;  // input_dim is taken from the features
    optimizer_config optimizer;
    mining mining_kind = mining::semi_hard;
    float margin = 0.2f;
    size_t persons_per_batch = 16;    // P
    size_t images_per_person = 4;     // K
    size_t singletons_per_batch = 8;  // S
    int epochs = 30;
    size_t batches_per_epoch = 0;  // 0: ceil(people with >= 2 images / P)
    int patience = 5;              // 0: never stop early
    uint64_t seed = 1;
    double calibration_far = 1e-3;  // the threshold's FAR on validation
};

struct epoch_record {
    int epoch = 0;  // 1-based
    float learning_rate = 0;
    double loss = 0;  // mean over batches with triplets
    double triplets_per_batch = 0;
    double active_per_batch = 0;
    size_t min_triplets = 0;  // fewest valid triplets in one batch
    // Semi-hard batches that held no semi-hard triplet and got triplets
    // by batch-hard mining instead.
    size_t fallback_batches = 0;
    size_t batches_without_triplets = 0;  // skipped: nothing to learn
    validation_metrics validation;
    double seconds = 0;
};

struct batch_event {
    int epoch = 0;  // 1-based
    size_t batch = 0;
    size_t triplets = 0;
    size_t active = 0;
    double loss = 0;
    bool fallback = false;  // mined batch-hard: no semi-hard triplet
};
using batch_callback = std::function<void(const batch_event &)>;

struct train_result {
    embedding_head head;          // the best epoch's
    int best_epoch = 0;           // 0: the untrained head was never beaten
    validation_metrics backbone;  // the features without a head
    validation_metrics untrained;
    std::vector<epoch_record> epochs;
    bool stopped_early = false;
    // Threshold at calibration_far on the validation impostor pairs
    // (squared L2; accept when distance <= threshold).
    operating_point calibration;
};

// Trains a head. Mining: with semi-hard mining, a batch in which no
// (anchor, positive) pair has a negative inside the margin band is mined
// batch-hard instead (counted in fallback_batches), so hard batches still
// teach; a batch with no triplet at all is skipped and counted. The
// number of valid triplets of every batch goes to logger() (debug) and to
// `on_batch`. Errors (invalid_argument), checked before any step: P < 2,
// K < 2, epochs < 1, margin <= 0, no training person with >= 2 images or
// no possible negative (one such person and no single-image person in the
// batches: a batch could never hold a triplet), a feature dim that
// differs between sets, a bad optimiser config; internal when the loss or
// a weight becomes NaN or Inf (names epoch and batch; the partly trained
// head is dropped). Progress goes to logger() and to `on_batch`.
result<train_result> train_head(const feature_set &train,
                                const validation_set &val,
                                const train_config &config,
                                const batch_callback &on_batch = nullptr);

// A JSON report: config, untrained and per-epoch figures, best epoch,
// calibrated threshold.
nlohmann::json report_json(const train_config &config, const train_result &r);

}  // namespace facevec::train
