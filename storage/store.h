// The persistent face store: RocksDB is the source of truth.
//
// A database holds database-wide metadata (schema version, dim, metric,
// model fingerprint, whether embeddings are L2-normalised, the decision
// threshold) and one record per face. One put_batch is one atomic RocksDB
// write: after a crash it is wholly present or wholly absent.
//
// Durability: every write goes through RocksDB's write-ahead log before it
// returns, so an acknowledged write survives the process being killed.
// Without open_options::sync it may be lost on power loss or a kernel
// crash (the database then opens at an earlier consistent state); with
// sync, every write is fsync'ed before it returns.
//
// Thread-safety: the caller serialises writes (put_batch, remove_*,
// set_threshold, purge) against each other and against meta(). Every
// other read (get_face, has_content(s), list_persons, scan, load_all,
// load_faces, face_count, person_count, disk_bytes) may run concurrently with
// other reads and with a write; a multi-record read sees one consistent state.
// purge() removes deleted data only once no scan started before it is
// still running.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace facevec::storage {

// The on-disk layout version this code writes and reads.
inline constexpr uint32_t kSchemaVersion = 3;

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
    uint64_t id = 0;               // assigned by the store, never reused
    std::string person;            // UTF-8, 1..kMaxLabelBytes bytes
    std::vector<float> embedding;  // dim floats
    std::string source;            // a path or a caller-given string
    std::string model_fingerprint;
    int64_t enrolled_at_us = 0;  // Unix time, microseconds
    std::string content_hash;    // of the source bytes, for resumable enroll
};

// Checks a label: non-empty, at most kMaxLabelBytes, valid UTF-8 (no
// overlong forms, surrogates or code points above U+10FFFF) and no ASCII
// control character (NUL, tab, line breaks, DEL, ...). invalid_argument
// otherwise; the message names the reason and the byte offset, the caller adds
// the item.
status validate_label(const std::string &label);

struct open_options {
    bool create_if_missing = false;
    // Used when creating; when opening, a non-zero dim or a non-empty
    // fingerprint here must match what is stored, or open fails with
    // error_code::mismatch naming both values.
    db_meta meta;
    // fsync the write-ahead log on every write (see Durability above).
    bool sync = false;
};

class store {
  public:
    // Opens or creates the database at `path` (a folder). Creating makes
    // missing parent folders and is atomic: the database is built beside
    // `path` and renamed into place, so a crash leaves no half-made one.
    // Errors, each naming `path`:
    //   in_use     another process (or this one) has it open;
    //   not_found  missing or empty folder and create_if_missing is false;
    //   corruption not a facevec database (no CURRENT file, missing column
    //              families or metadata) or unreadable RocksDB files;
    //   mismatch   see open_options, or a newer schema version;
    //   invalid_argument  creating with dim 0 or > 65536, bad threshold.
    static result<std::unique_ptr<store>> open(const std::string &path,
                                               const open_options &opts);
    ~store();

    // The database-wide metadata read on open.
    const db_meta &meta() const;

    // Stores a new decision threshold (squared L2). invalid_argument when
    // it is negative, NaN or infinite.
    status set_threshold(float threshold);

    // Writes all `faces` in one atomic batch, assigning fresh ids, and
    // returns them in order; each record's id (and an enrolled_at_us of
    // 0, replaced by the current time) is written back into `faces`. The
    // id counter and the face/person counts are in the same batch.
    // REQUIRES: finite values, checked by the caller. The store itself
    // refuses the whole batch (invalid_argument, naming the item) when an
    // embedding is not dim floats or a label fails validate_label. An
    // empty span writes nothing. io_error when RocksDB cannot write.
    result<std::vector<uint64_t>> put_batch(std::span<face_record> faces);

    // Deletes every record of `person` (embeddings, metadata, indexes,
    // content hashes) in one atomic write and returns their ids in id
    // order; not_found when the person has no faces. When the persons
    // index is damaged (a record cannot be decoded, or it lists fewer
    // faces than the person's count), the faces are found by a scan of
    // every face record instead, so that a person can always be removed. The
    // bytes stay in RocksDB's files until compaction or purge() (see the
    // README).
    result<std::vector<uint64_t>> remove_person(const std::string &person);

    // Deletes every record of one face in one atomic write, and the
    // person with it when it was their last face; not_found when there
    // is no such id. Cost: two reads, a seek and the rewrite of one
    // persons record (at most 512 faces).
    status remove_face(uint64_t id);

    // Calls fn for every face in id order, on one snapshot. Stops early
    // and returns the status when fn returns an error. with_embedding=
    // false leaves the embedding empty and does not read the vectors.
    // corruption when a record cannot be decoded.
    status scan(const std::function<status(const face_record &)> &fn,
                bool with_embedding = true) const;

    // Reads all faces in bulk, in id order, on one snapshot: ids.size()
    // == persons.size() == n, vectors n x dim floats row-major; previous
    // contents are replaced. Used to rebuild the index on open.
    // corruption when a vector has no face record or the wrong size.
    status load_all(std::vector<uint64_t> &ids, std::vector<float> &vectors,
                    std::vector<std::string> &persons) const;

    // Receives one face of a bulk load: its id, its person label and its
    // embedding as dim float32, little-endian, at an address that may not
    // be aligned for floats (memcpy it). The views are valid only during
    // the call.
    using face_sink = std::function<void(uint64_t id, std::string_view person,
                                         std::string_view embedding)>;

    // Calls sink for every face in id order, on one snapshot, reading
    // each record once and copying nothing: the fastest way to rebuild an
    // index. corruption (naming the face) when a record cannot be decoded
    // or its embedding is not dim floats.
    status load_faces(const face_sink &sink) const;

    // The face with this id, or nullopt when there is none.
    // Limitation: a read error or a corrupt record is logged and also
    // returns nullopt; the signature has no status.
    std::optional<face_record> get_face(uint64_t id) const;

    // Persons in label (byte) order, starting after `after` ("" = first),
    // at most `limit`, with their face counts. Cost: O(limit).
    // Limitation: a read error is logged and ends the list early.
    std::vector<std::pair<std::string, uint64_t>> list_persons(
        const std::string &after, size_t limit) const;

    // True when `person` already has a face with this content hash; false
    // for an empty hash. Cost: one seek and a read of the person's
    // entries in the persons index (a few bytes per face of theirs).
    // Limitation: an error (see has_contents) is logged and gives false.
    bool has_content(const std::string &person,
                     const std::string &content_hash) const;

    // has_content for many (person, content hash) pairs at once, on one
    // snapshot, reading each person's entries once; element i answers
    // keys[i]. The digests of the last 4 persons with thousands of faces
    // looked up stay in memory (about 50 bytes a face), so a long import
    // under such labels reads their entries once, not per batch.
    // corruption (naming the person, the record and what is wrong) when a
    // persons record or a matching face record cannot be decoded, or the
    // index lists another number of faces than the person's count, so
    // that a damaged index stops an enroll rather than letting it enroll
    // duplicates; io_error when RocksDB cannot read.
    result<std::vector<bool>> has_contents(
        std::span<const std::pair<std::string, std::string>> keys) const;

    // Counts kept in memory and in the metadata, updated in each write's
    // batch: O(1).
    uint64_t face_count() const;
    uint64_t person_count() const;

    // Bytes of every file in the database folder (SSTs, logs, manifest).
    uint64_t disk_bytes() const;

    // Forces deleted records out of the files now: flushes every
    // memtable (starting a fresh WAL), compacts every level down to and
    // including the bottommost one, then waits until RocksDB has deleted
    // the obsolete SSTs and WAL files. When it returns ok, no file in the
    // folder holds a removed embedding. io_error when a flush or
    // compaction fails or an obsolete file is still there after 30 s.
    // Cost: rewrites the whole database.
    status purge();

  private:
    struct impl;
    explicit store(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::storage
