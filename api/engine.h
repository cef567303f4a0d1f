// facevec's C++ API: one engine per database.
//
// An engine owns the RocksDB store and the in-memory FAISS index built from
// it on open. Thread-safe: many queries run concurrently; writes (enroll,
// remove, set threshold, purge) are serialised and applied to the store
// first, then to the index, under an exclusive lock, so a query sees a
// batch wholly or not at all. No FAISS or RocksDB exception reaches a
// caller: every failure is a status naming the item and the reason.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/store.h"

namespace facevec {

struct engine_options {
    bool create_if_missing = false;
    // On create: the database's dim, model fingerprint, normalisation and
    // threshold. On open: a non-zero dim or non-empty fingerprint must
    // match what is stored.
    storage::db_meta meta;
};

// One face to enroll.
struct enroll_item {
    std::string person;
    std::vector<float> embedding;  // dim floats
    std::string source;            // path or caller-given string
    std::string content_hash;      // optional; enables resume
};

// A per-item failure: the item's position in the batch and why.
struct item_error {
    size_t item = 0;
    status error;
};

struct enroll_report {
    std::vector<uint64_t> ids;       // one per enrolled item, in order
    std::vector<size_t> enrolled;    // their positions in the batch
    std::vector<size_t> skipped;     // already enrolled (same hash)
    std::vector<item_error> errors;  // left out, with the reason
};

struct match {
    std::string person;
    uint64_t face = 0;
    float distance = 0;  // squared L2
};

struct query_answer {
    std::optional<std::string> person;  // nullopt: unknown
    float distance = 0;  // to the nearest face; 0 when the db is empty
    std::vector<match> top;  // per person, nearest first, at most k
};

struct engine_stats {
    uint64_t faces = 0;
    uint64_t persons = 0;
    uint32_t dim = 0;
    std::string model_fingerprint;
    bool normalized = false;
    float threshold = 0;
    uint64_t disk_bytes = 0;
};

class engine {
public:
    static result<std::unique_ptr<engine>> open(const std::string &path,
                                                const engine_options &o);
    ~engine();

    // Enrolls a batch in one atomic write. Invalid items (wrong dim, NaN or
    // Inf, bad label) are reported in errors and left out; the rest are
    // written together. strict: any invalid item refuses the whole batch
    // (error_code::invalid_argument naming the first bad item).
    result<enroll_report> enroll(std::span<const enroll_item> items,
                                 bool strict = false);

    // n queries of dim floats each. k >= 1 persons per answer. threshold:
    // overrides the database's; a query whose nearest distance is above
    // it is unknown. Errors: k <= 0, NaN/Inf in a query (names the query).
    result<std::vector<query_answer>> query(
        const float *queries, size_t n, int k,
        std::optional<float> threshold = std::nullopt) const;

    // Removes every face of `person`; returns how many. not_found when the
    // person is unknown.
    result<size_t> remove_person(const std::string &person);
    status remove_face(uint64_t id);

    std::vector<std::pair<std::string, uint64_t>> list_persons(
        const std::string &after, size_t limit) const;

    engine_stats stats() const;
    const storage::db_meta &meta() const;
    status set_threshold(float threshold);
    status purge();

    // Read access to the store, for export and scans.
    const storage::store &store() const;

private:
    struct impl;
    explicit engine(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec
