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
    // fsync every write (see storage/store.h, Durability); off, a write
    // survives a killed process but not a power loss.
    bool sync = false;
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
    float distance = 0;      // to the nearest face; 0 when the db is empty
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
    uint64_t indexed = 0;  // faces in the in-memory index; == faces
};

// The largest k a query accepts; a larger one is invalid_argument.
inline constexpr int kMaxTopK = 10000;

// Vector components beyond +-kMaxComponent are refused: squared L2
// distances between such vectors stay finite in float for any dim up to
// 65,536 ((2e15)^2 x 65,536 < FLT_MAX).
inline constexpr float kMaxComponent = 1e15F;

// Ok when all n values are finite and within +-kMaxComponent; else
// invalid_argument naming the first bad one, e.g. "NaN at component 3".
status check_finite(const float *v, size_t n);

class engine {
  public:
    // Opens the database at `path` (creating it when o.create_if_missing)
    // and rebuilds the index from the store in one bulk load. Errors, each
    // naming the path: not_found (missing), in_use (open in another
    // process), corruption (unreadable), mismatch (dim or fingerprint
    // differ from o.meta), invalid_argument (creating with dim 0).
    static result<std::unique_ptr<engine>> open(const std::string &path,
                                                const engine_options &o);
    ~engine();

    // Enrolls a batch in one atomic write. Invalid items (wrong dim, NaN or
    // Inf, bad label) are reported in errors and left out; the rest are
    // written together. strict: any invalid item refuses the whole batch
    // (error_code::invalid_argument naming the first bad item). Items with
    // a content_hash that their person already has (in the database or
    // earlier in this batch) are skipped. When the database is normalised
    // (meta().normalized) every embedding is L2-normalised before it is
    // stored. The batch is in the store before it is in the index; both
    // happen under the writer lock, so no query sees part of it.
    result<enroll_report> enroll(std::span<const enroll_item> items,
                                 bool strict = false);

    // Checks one item as enroll does (dim, finite values, label, and a
    // non-zero vector when the database is normalised) without writing.
    // The message names the item by `position`, person and source.
    status validate(const enroll_item &item, size_t position) const;

    // n queries of dim floats each, row-major. k in 1..kMaxTopK persons
    // per answer. threshold: overrides the database's and must be finite
    // and > 0; a query whose nearest distance is above it is unknown. A
    // database threshold of 0 means unset: no query is then rejected.
    // When the database is normalised, queries are L2-normalised first.
    // Errors: invalid_argument for k out of range, a bad threshold,
    // NaN/Inf (or an all-zero vector in a normalised database) in a query,
    // naming the query.
    result<std::vector<query_answer>> query(
        const float *queries, size_t n, int k,
        std::optional<float> threshold = std::nullopt) const;

    // Removes every face of `person` from the store, then the index;
    // returns how many. not_found when the person is unknown.
    result<size_t> remove_person(const std::string &person);
    // Removes one face; not_found naming the id when there is none.
    status remove_face(uint64_t id);

    // Persons in label order after `after` ("" = from the first), at most
    // `limit`, with their face counts. Empty on a store failure (logged).
    std::vector<std::pair<std::string, uint64_t>> list_persons(
        const std::string &after, size_t limit) const;

    // Thread-safe figures: counts from the store, the index's size.
    engine_stats stats() const;

    // The stored metadata. Not thread-safe against set_threshold (use
    // stats() for the threshold when others may write).
    const storage::db_meta &meta() const;

    // Sets the database's threshold (squared L2); 0 unsets it. Errors:
    // invalid_argument when negative or not finite.
    status set_threshold(float threshold);

    // Compacts the store so removed embeddings leave the files now.
    status purge();

    // Read access to the store, for export and scans.
    const storage::store &store() const;

  private:
    struct impl;
    explicit engine(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec
