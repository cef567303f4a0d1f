// Feature matrices for training: labelled sets, .npy files and the on-disk
// cache of backbone features.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::train {

// n x dim float32, row-major.
struct feature_matrix {
    size_t rows = 0;
    size_t cols = 0;
    std::vector<float> data;
};

// Rows labelled by person: label[i] in [0, persons.size()).
struct feature_set {
    feature_matrix features;
    std::vector<int> label;
    std::vector<std::string> persons;  // label -> person name
};

// Builds a set from a matrix and one person name per row (labels numbered
// in order of first appearance). Errors (invalid_argument): row count and
// name count differ, an empty name (names the row), a NaN/Inf feature
// (names the row), zero rows or columns.
result<feature_set> make_feature_set(feature_matrix m,
                                     const std::vector<std::string> &names);

// The rows of `set` whose person is in `persons` (kept in row order).
feature_set select_persons(const feature_set &set,
                           const std::vector<std::string> &persons);

// Reads a 2-D little-endian float32 C-order .npy file (version 1 or 2).
// Errors: not_found, io_error; unsupported for another dtype, Fortran
// order or a shape that is not 2-D; corruption when truncated.
result<feature_matrix> read_npy(const std::string &path);
// Writes m as a version 1 .npy file. Errors: io_error.
status write_npy(const std::string &path, const feature_matrix &m);

// Non-empty lines of a text file, trailing spaces trimmed. Errors:
// not_found, io_error.
result<std::vector<std::string>> read_lines(const std::string &path);

// What makes cached features valid: the backbone that computed them (its
// weights fingerprint) and how images were prepared for it (decoding,
// alignment, crop, resize, normalisation), as free text.
struct feature_cache_key {
    std::string backbone_fingerprint;
    std::string preprocessing;
};

// Computes the features of one image: a vector of the backbone's dim.
using feature_fn =
    std::function<result<std::vector<float>>(const std::string &path)>;
// Called after each computed image with (done, total).
using progress_fn = std::function<void(size_t, size_t)>;

// A cache file of the features of an image list:
//   "FVFEAT1\n", 8-byte little-endian JSON length, JSON {backbone,
//   preprocessing, list_hash (FNV-1a of the paths), rows, cols}, then
//   rows x cols float32.
// get() reuses the file when backbone, preprocessing and image list all
// match; otherwise (or when the file is missing or damaged) it computes
// every image with `compute`, rewrites the file (path.tmp then rename) and
// logs why. Not thread-safe.
class feature_cache {
  public:
    feature_cache(std::string path, feature_cache_key key)
        : path_(std::move(path)), key_(std::move(key)) {}

    // Features of `images`, one row each, in order. Errors: the first
    // failing image's status, prefixed with its path; invalid_argument
    // when an image's features have another dim than the first or hold
    // NaN/Inf. A cache that cannot be written is logged, not an error.
    result<feature_matrix> get(const std::vector<std::string> &images,
                               const feature_fn &compute,
                               const progress_fn &progress = nullptr);

    // Whether the last get() read the file (true) or computed (false), and
    // why it recomputed ("" after a hit).
    bool last_was_hit() const { return hit_; }
    const std::string &last_miss_reason() const { return miss_reason_; }

    // The FNV-1a 64 hash of the image list as stored in the header.
    static uint64_t list_hash(const std::vector<std::string> &images);

  private:
    std::string path_;
    feature_cache_key key_;
    bool hit_ = false;
    std::string miss_reason_;

    result<feature_matrix> read(const std::vector<std::string> &images);
    status write(const std::vector<std::string> &images,
                 const feature_matrix &m) const;
};

}  // namespace facevec::train
