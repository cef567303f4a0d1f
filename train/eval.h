// Evaluation metrics for face embeddings: LFW verification from pair
// distances and open-set identification on person-per-folder data.
//
// Distances are "smaller = more alike" (squared L2 or L2; the metrics only
// compare them). Convention everywhere in this file: a pair is accepted as
// the same person when distance <= threshold. No interpolation: every
// reported rate is the rate measured at one concrete threshold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::train {

// ---------------------------------------------------------------------
// LFW protocol files

// Image `number` (1-based) of `person`: lfw/<person>/<person>_%04d.jpg.
struct image_ref {
    std::string person;
    int number = 0;
};

// The relative path "lfw/<person>/<person>_<number, 4 digits>.jpg".
std::string lfw_image_path(const image_ref &ref);

struct lfw_pair {
    image_ref a;
    image_ref b;
    bool same = false;
    int fold = 0;  // 0-based
};

// A parsed pairs file. pairs.txt (View 2) starts with "10 300": 10 folds,
// each of 300 same then 300 different pairs. pairsDevTrain.txt and
// pairsDevTest.txt (View 1) start with one number n: a single fold of n
// same then n different pairs.
struct lfw_pairs {
    int folds = 0;
    int pairs_per_class = 0;      // per fold
    std::vector<lfw_pair> pairs;  // in file order, folds * 2 * per-class
};

// Reads a pairs file. Errors: not_found / io_error for the file;
// invalid_argument naming "<path> line <k>" for a malformed header or pair
// line, a same line among the different ones (or the reverse), a count
// that disagrees with the header, or an image number < 1.
result<lfw_pairs> parse_lfw_pairs_file(const std::string &path);

// The same, from text; `name` stands for the file in error messages.
result<lfw_pairs> parse_lfw_pairs(const std::string &text,
                                  const std::string &name);

// A people list: people.txt / peopleDevTrain.txt / peopleDevTest.txt.
// Lines "name count"; lines holding a single number (the total, or a
// fold's size in people.txt) are headers and skipped. Errors name the file
// and line (invalid_argument), or the file (not_found, io_error).
struct person_count {
    std::string person;
    int images = 0;
};
result<std::vector<person_count>> parse_people_file(const std::string &path);
result<std::vector<person_count>> parse_people(const std::string &text,
                                               const std::string &name);

// ---------------------------------------------------------------------
// Verification from pair distances

// A threshold with the rates it yields on a set of pairs.
struct operating_point {
    float threshold = 0;  // accept when distance <= threshold
    double tar = 0;       // genuine (same) pairs accepted / genuine pairs
    double far = 0;       // impostor pairs accepted / impostor pairs
    // false when the impostor set is too small to measure the target FAR
    // (fewer than 1 / target impostors): the point then has FAR 0, taken
    // just below the nearest impostor.
    bool far_resolved = true;
};

struct roc_point {
    double far = 0;
    double tar = 0;
};

struct verification_report {
    // k-fold protocol: each fold's threshold maximises the accuracy on the
    // other folds; mean and sample standard deviation over folds, and
    // the standard error (std / sqrt(folds)). One fold: the fold's own best
    // threshold (optimistic; std 0).
    std::vector<double> fold_accuracy;
    std::vector<float> fold_threshold;
    double accuracy_mean = 0;
    double accuracy_std = 0;
    double accuracy_stderr = 0;

    // The best single threshold over all pairs and its accuracy.
    float best_threshold = 0;
    double best_accuracy = 0;

    // Area under the ROC curve: P(genuine < impostor) + P(equal) / 2.
    double auc = 0;
    operating_point at_far_1e2;  // TAR at FAR <= 1e-2
    operating_point at_far_1e3;  // TAR at FAR <= 1e-3

    // The ROC curve, one point per distinct distance, FAR ascending,
    // starting at (0, 0).
    std::vector<roc_point> roc;
};

// Accuracy-maximising threshold over the given pairs. Candidates are "accept
// nothing" (just below the smallest distance) and every distinct distance;
// among equally accurate candidates the smallest wins. same[i] != 0 marks a
// genuine pair. REQUIRES: equal, non-zero sizes; finite distances.
float best_accuracy_threshold(std::span<const float> distances,
                              std::span<const uint8_t> same);

// Fraction of pairs classified right at `threshold`.
double accuracy_at(std::span<const float> distances,
                   std::span<const uint8_t> same, float threshold);

// The largest threshold whose FAR on `impostors` is <= far: just below the
// (floor(far * n) + 1)-th smallest impostor distance, so ties never push
// the FAR above the target; the largest impostor when far >= 1. Errors
// (invalid_argument): empty impostors, far outside (0, 1], NaN or Inf
// distance (names its position).
result<float> threshold_at_far(std::span<const float> impostors, double far);

// The operating point at FAR <= far (see threshold_at_far).
result<operating_point> tar_at_far(std::span<const float> genuine,
                                   std::span<const float> impostors,
                                   double far);

// Verification report for pairs with fold ids 0..folds-1 (fold may be
// empty: one fold). Errors (invalid_argument): sizes differ, no genuine or
// no impostor pair, NaN/Inf distance (names the pair), a fold id out of
// range or a fold without pairs, or a fold whose complement has no genuine
// or no impostor pair.
result<verification_report> evaluate_verification(
    std::span<const float> distances, std::span<const uint8_t> same,
    std::span<const int> fold = {});

// ---------------------------------------------------------------------
// Open-set identification

// One image of the open-set split.
struct probe_image {
    std::string person;
    std::string file;
};

// gallery: the first image (by file name) of every person with >= 2
// images, in person order; known: their other images; unknown: every image
// of the people with exactly one image. People with no image are ignored.
struct open_set_split {
    std::vector<probe_image> gallery;
    std::vector<probe_image> known;
    std::vector<probe_image> unknown;
};

// Splits person -> files (sorted here by file name; duplicates kept).
open_set_split split_open_set(
    const std::map<std::string, std::vector<std::string>> &files_by_person);

struct open_set_point {
    double target_far = 0;
    operating_point threshold;  // on unknown probes; tar = DIR below
    double dir = 0;  // known probes identified at rank 1 and accepted
};

struct open_set_report {
    size_t known = 0;
    size_t unknown = 0;
    size_t gallery = 0;
    double rank1 = 0;  // known probes whose true person ranks first
    double rank5 = 0;  // ... within the first five
    open_set_point at_far_1e2;
    open_set_point at_far_1e3;
};

// From distances to the nearest gallery entry of each gallery person.
// known: k x g floats, row-major, with truth[i] in [0, g) the true person
// of known probe i; unknown: u x g floats. Rank of a probe's true person:
// 1 + the number of other persons at a distance <= its own (ties count
// against it). +inf marks a person the probe cannot reach. Errors
// (invalid_argument): g == 0, no known or no unknown probe, sizes that
// disagree, a truth out of range, a NaN distance (names the probe), an
// unknown probe with no finite distance.
result<open_set_report> evaluate_open_set(std::span<const float> known,
                                          std::span<const int> truth,
                                          std::span<const float> unknown,
                                          size_t gallery_persons);

// The same from embeddings (squared L2). gallery: g x d floats with
// gallery_person[j] its person in [0, persons); probes: n x d floats.
// Returns n x persons floats: each probe's distance to the nearest
// gallery entry of every person (+inf for a person without entries).
std::vector<float> nearest_per_person(std::span<const float> gallery,
                                      std::span<const int> gallery_person,
                                      size_t persons,
                                      std::span<const float> probes,
                                      size_t dim);

// Squared L2 distance between two d-float vectors.
float squared_l2(const float *a, const float *b, size_t dim);

}  // namespace facevec::train
