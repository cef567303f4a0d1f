// The persistent face store: RocksDB is the source of truth.
//
// A database holds database-wide metadata (schema version, dim, metric,
// model fingerprint, whether embeddings are L2-normalised, the decision
// threshold) and one record per face. One put_batch is one atomic RocksDB
// write: after a crash it is wholly present or wholly absent.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::storage {

// The on-disk layout version this code writes and reads.
inline constexpr uint32_t kSchemaVersion = 1;

// A person label is 1 to kMaxLabelBytes bytes of valid UTF-8.
inline constexpr size_t kMaxLabelBytes = 256;

enum class metric_kind { l2 };

struct db_meta {
    uint32_t schema_version = kSchemaVersion;
    uint32_t dim = 0;
    metric_kind metric = metric_kind::l2;
    std::string model_fingerprint;  // "" for vectors from elsewhere
    bool normalized = false;        // embeddings are L2-normalised
    float threshold = 0.0f;         // squared-L2 distance; 0 = unset
};

struct face_record {
    uint64_t id = 0;           // assigned by the store, never reused
    std::string person;        // UTF-8, 1..kMaxLabelBytes bytes
    std::vector<float> embedding;  // dim floats
    std::string source;        // a path or a caller-given string
    std::string model_fingerprint;
    int64_t enrolled_at_us = 0;  // Unix time, microseconds
    std::string content_hash;  // of the source bytes, for resumable enroll
};

// Checks a label: non-empty, at most kMaxLabelBytes, valid UTF-8. The
// message names the reason; the caller adds the item.
status validate_label(const std::string &label);

struct open_options {
    bool create_if_missing = false;
    // Used when creating; when opening, a non-zero dim or a non-empty
    // fingerprint here must match what is stored, or open fails with
    // error_code::mismatch naming both values.
    db_meta meta;
};

class store {
public:
    // Opens or creates the database at `path`. Fails with in_use when
    // another process holds it, not_found when it is missing and
    // create_if_missing is false, corruption when it cannot be read,
    // mismatch as described in open_options.
    static result<std::unique_ptr<store>> open(const std::string &path,
                                               const open_options &opts);
    ~store();

    const db_meta &meta() const;
    status set_threshold(float threshold);

    // Writes all `faces` in one atomic batch, assigning fresh ids, and
    // returns them in order. REQUIRES: every record already validated
    // (dim, finite values, label) by the caller; enrolled_at_us of 0 is
    // replaced by the current time.
    result<std::vector<uint64_t>> put_batch(std::span<face_record> faces);

    // Deletes every face of `person` in one atomic write and returns
    // their ids; not_found when the person has no faces.
    result<std::vector<uint64_t>> remove_person(const std::string &person);

    // Deletes one face; not_found when there is no such id.
    status remove_face(uint64_t id);

    // Calls fn for every face in id order. Stops early and returns the
    // status when fn returns an error. with_embedding=false skips
    // decoding the vector.
    status scan(const std::function<status(const face_record &)> &fn,
                bool with_embedding = true) const;

    // Reads all embeddings and ids in bulk: ids.size() == n, vectors
    // n x dim floats row-major. Used to rebuild the index on open.
    status load_all(std::vector<uint64_t> &ids, std::vector<float> &vectors,
                    std::vector<std::string> &persons) const;

    std::optional<face_record> get_face(uint64_t id) const;

    // Persons in label order, starting after `after` ("" = first), at most
    // `limit`, with their face counts.
    std::vector<std::pair<std::string, uint64_t>> list_persons(
        const std::string &after, size_t limit) const;

    // True when `person` already has a face with this content hash.
    bool has_content(const std::string &person,
                     const std::string &content_hash) const;

    uint64_t face_count() const;
    uint64_t person_count() const;

    // Bytes on disk (SST files and logs).
    uint64_t disk_bytes() const;

    // Forces deleted records out of the files now: flushes the memtable
    // and compacts every level, so no SST still holds removed embeddings.
    status purge();

private:
    struct impl;
    explicit store(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::storage
