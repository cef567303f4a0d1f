// The store's on-disk layout: column family names, keys and the compact
// binary encodings of its values. Internal to facevec::storage; tests use
// it to write or inspect records by hand.
//
// Column families (schema version 3):
//   meta           meta key name -> value (see kMeta* below)
//   faces          id (8 bytes, big-endian) -> the face's metadata
//                  (encode_face_meta) followed by its dim float32,
//                  little-endian: one record per face
//   persons        person + 0x00 + id (8 bytes, big-endian) -> a run of
//                  that person's faces from one write, the key's id being
//                  the last of them when written (see append_person_entry):
//                  a person's faces, and the lookup that lets an
//                  interrupted enroll resume. A few keys per person per
//                  batch, not one per face, keep bulk imports cheap; runs
//                  never overlap, so the first key at or after
//                  person_key(person, id) holds face id if any does.
//   person_counts  person -> face count (8 bytes, big-endian)
// Big-endian ids make RocksDB's byte order the id order. Labels never
// contain 0x00 (validate_label), so "person + 0x00" is a unique prefix.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/store.h"

namespace facevec::storage::internal {

// Limitation: vectors are stored in the host byte order; facevec builds
// only on little-endian hosts so that files are portable between them.
static_assert(std::endian::native == std::endian::little,
              "facevec stores float32 little-endian");

inline constexpr const char *kMetaFamily = "meta";
inline constexpr const char *kFacesFamily = "faces";
inline constexpr const char *kPersonsFamily = "persons";
inline constexpr const char *kPersonCountsFamily = "person_counts";

// Meta keys. Integers are big-endian fixed width; the threshold is the
// float's bit pattern as a u32; booleans and the metric are one byte.
inline constexpr const char *kMetaSchemaVersion = "schema_version";  // u32
inline constexpr const char *kMetaDim = "dim";                       // u32
inline constexpr const char *kMetaMetric = "metric";                 // u8
inline constexpr const char *kMetaFingerprint = "model_fingerprint";
inline constexpr const char *kMetaNormalized = "normalized";     // u8
inline constexpr const char *kMetaThreshold = "threshold";       // u32
inline constexpr const char *kMetaNextId = "next_id";            // u64
inline constexpr const char *kMetaFaceCount = "face_count";      // u64
inline constexpr const char *kMetaPersonCount = "person_count";  // u64

// The byte between a person label and the rest of an index key.
inline constexpr char kLabelSeparator = '\0';

inline constexpr size_t kIdBytes = sizeof(uint64_t);

std::string encode_u32(uint32_t v);
std::string encode_u64(uint64_t v);
// nullopt when `bytes` is not exactly 4 (or 8) bytes long.
std::optional<uint32_t> decode_u32(std::string_view bytes);
std::optional<uint64_t> decode_u64(std::string_view bytes);

// An id key: 8 bytes, big-endian.
std::string id_key(uint64_t id);

// "person + 0x00", the prefix of every persons key of a person.
std::string person_prefix(std::string_view person);
// The persons key of a run of faces whose last id is `last_id`, and
// where a lookup of face `last_id` seeks to.
std::string person_key(std::string_view person, uint64_t last_id);
// The id at the end of a persons key whose person prefix is
// `prefix_size` bytes; nullopt when 8 bytes do not follow it.
std::optional<uint64_t> id_of_person_key(std::string_view key,
                                         size_t prefix_size);

// The 64-bit digest (FNV-1a) of a content hash that persons records keep
// instead of the hash itself. Equal digests are only candidates: the
// face record holds the full hash to confirm a match.
uint64_t content_digest(std::string_view hash);

// One face in the value of a persons key.
struct person_entry {
    uint64_t id = 0;
    bool hashed = false;  // false when the face has no content hash
    uint64_t digest = 0;  // content_digest of its hash when hashed
};

// Appends one entry to a persons value. `previous` is the id of the
// value's last entry, or 0 for the first. REQUIRES: previous < id < 2^63.
// Layout per entry: varint((id - previous) * 2 + hashed), then the
// digest as 8 bytes little-endian when hashed.
void append_person_entry(std::string &value, uint64_t previous, uint64_t id,
                         std::string_view hash);
// The same with the digest already known (rewriting a record).
void append_person_entry(std::string &value, uint64_t previous,
                         const person_entry &entry);

// Decodes a persons value into `entries` (replaced). Returns nullptr when
// it decodes, else what is wrong: it is empty, an entry is truncated, or
// its ids are not increasing or pass 2^64 - 1.
const char *decode_person_entries(std::string_view value,
                                  std::vector<person_entry> &entries);

// A face's metadata (all of face_record but id and embedding):
// varint-prefixed person and source; the model fingerprint as varint 0
// when it equals the database's (`db_fingerprint`, not repeated per face)
// or else varint(size + 1) and its bytes; the enrollment time as 8 bytes
// little-endian two's complement; the content hash as varint(size * 2 +
// packed) and its bytes, where a hash of an even number of lowercase hex
// digits is packed into the bytes those digits spell.
std::string encode_face_meta(const face_record &face,
                             std::string_view db_fingerprint);

// Fills person, source, model_fingerprint, enrolled_at_us, content_hash.
// False when `bytes` is truncated or has trailing bytes.
bool decode_face_meta(std::string_view bytes, std::string_view db_fingerprint,
                      face_record &face);

// Replaces out with a faces value: the metadata, then the embedding's
// floats. Reusing `out` across faces avoids an allocation per face.
void encode_face_value(const face_record &face, std::string_view db_fingerprint,
                       std::string &out);

// Splits a faces value holding `dim` floats into the metadata bytes and
// the embedding bytes; false when it is shorter than the embedding.
bool split_face_value(std::string_view value, uint32_t dim,
                      std::string_view &meta, std::string_view &embedding);

// Only the person label at the front of encoded face metadata, without a
// copy; false when truncated.
bool decode_face_person(std::string_view bytes, std::string_view &person);

}  // namespace facevec::storage::internal
