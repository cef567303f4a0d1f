#include "storage/store.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>

#include "common/log.h"
#include "storage/codec.h"
#include "storage/options.h"

namespace facevec::storage {
namespace {

namespace fs = std::filesystem;

// Indexes of the column family handles; the order of kFamilyNames.
enum family : size_t {
    default_family,
    meta_family,
    faces_family,
    persons_family,
    person_counts_family,
    family_count,
};

const std::array<std::string, family_count> kFamilyNames = {
    rocksdb::kDefaultColumnFamilyName,
    internal::kMetaFamily,
    internal::kFacesFamily,
    internal::kPersonsFamily,
    internal::kPersonCountsFamily,
};

constexpr uint32_t kMaxDim = 1u << 16;
constexpr uint64_t kFirstId = 1;
constexpr uint8_t kMetricL2 = 0;
constexpr int kMaxBackgroundJobs = 2;
// Faces are read in bulk: large blocks keep the index small.
constexpr size_t kFaceBlockBytes = 64 << 10;
constexpr int kBloomBitsPerKey = 10;
constexpr size_t kPersonBuckets = 1 << 16;
constexpr int32_t kPersonSkipListHeight = 12;
// Ids below 2^32 share these leading key bytes, hence one insert hint.
constexpr size_t kIdHintPrefixBytes = 4;
constexpr size_t kScanReadaheadBytes = 4 << 20;
// Batch bytes per face beside its vector, labels and hashes (keys,
// varints, the time, record headers), and per batch (counters, header).
constexpr size_t kFaceOverheadBytes = 64;
constexpr size_t kBatchOverheadBytes = 256;
// Faces per persons record at most: removing one face rewrites its
// record, so a record stays a few kilobytes.
constexpr size_t kMaxEntriesPerRecord = 512;
// Ids stay below 2^63, so a persons entry's varint(delta * 2) fits.
constexpr uint64_t kMaxId = (uint64_t{1} << 63) - 1;
// A person with at least this many faces has their content digests kept
// in memory after a lookup, for the kCachedPersons looked up last.
constexpr size_t kCachedPersonFaces = 4096;
constexpr size_t kCachedPersons = 4;
// Schema versions before this one are refused (no migration).
constexpr uint32_t kOldestReadableSchema = 3;
constexpr auto kPurgeWaitLimit = std::chrono::seconds(30);
constexpr auto kPurgePollInterval = std::chrono::milliseconds(5);
constexpr const char *kCurrentFileName = "CURRENT";
constexpr const char *kSstSuffix = ".sst";
constexpr const char *kWalSuffix = ".log";

// The person label and its separator at the front of a persons key.
class person_prefix_transform : public rocksdb::SliceTransform {
  public:
    const char *Name() const override { return "facevec.person_prefix"; }
    rocksdb::Slice Transform(const rocksdb::Slice &key) const override {
        const void *end =
            std::memchr(key.data(), internal::kLabelSeparator, key.size());
        FACEVEC_ASSERT(end != nullptr, "persons key without a separator");
        return {key.data(),
                size_t(static_cast<const char *>(end) - key.data()) + 1};
    }
    bool InDomain(const rocksdb::Slice &key) const override {
        return std::memchr(key.data(), internal::kLabelSeparator, key.size()) !=
               nullptr;
    }
};

rocksdb::ColumnFamilyOptions family_options(size_t f) {
    rocksdb::ColumnFamilyOptions o;
    rocksdb::BlockBasedTableOptions table;
    if (f == faces_family) {
        // Float32 embeddings, the bulk of a face, do not compress; skip
        // the CPU cost.
        o.compression = rocksdb::kNoCompression;
        table.block_size = kFaceBlockBytes;
        // New ids only grow: a memtable insert lands right after the
        // previous one, which the hint finds without a skiplist search.
        o.memtable_insert_with_hint_prefix_extractor.reset(
            rocksdb::NewFixedPrefixTransform(kIdHintPrefixBytes));
    }
    if (f == persons_family) {
        // A person's keys sit in their own bucket of the memtable, so an
        // insert searches that person's few keys, not every key written
        // since the last flush. Lookups stay within one person prefix.
        o.prefix_extractor = std::make_shared<person_prefix_transform>();
        o.memtable_factory.reset(rocksdb::NewHashSkipListRepFactory(
            kPersonBuckets, kPersonSkipListHeight));
    }
    if (f == person_counts_family) {
        // A point lookup per person on every enroll.
        table.filter_policy.reset(
            rocksdb::NewBloomFilterPolicy(kBloomBitsPerKey));
    }
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    return o;
}

rocksdb::DBOptions db_options() {
    rocksdb::DBOptions o;
    o.max_background_jobs = kMaxBackgroundJobs;
    // A recycled or archived WAL would keep removed embeddings on disk.
    o.recycle_log_file_num = 0;
    o.WAL_ttl_seconds = 0;
    o.WAL_size_limit_MB = 0;
    o.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
    // Writes are serialised (one writer); the persons family's hashed
    // memtable needs this off.
    o.allow_concurrent_memtable_write = false;
    return o;
}

}  // namespace

rocksdb::Options internal::raw_store_options() {
    rocksdb::Options o(db_options(), family_options(faces_family));
    o.create_if_missing = true;
    return o;
}

rocksdb::ReadOptions internal::bulk_read_options() {
    rocksdb::ReadOptions ro;
    ro.readahead_size = kScanReadaheadBytes;
    ro.fill_cache = false;
    return ro;
}

namespace {

std::string in_quotes(const std::string &s) {
    return "'" + s + "'";
}

// RocksDB (7.x) reports a held LOCK file as an IO error: "While lock
// file: ..." when another process holds it, "lock hold by current
// process" when this one does.
bool is_lock_error(const rocksdb::Status &s) {
    if (!s.IsIOError())
        return false;
    std::string m = s.ToString();
    return m.find("lock file") != std::string::npos ||
           m.find("lock hold") != std::string::npos;
}

bool is_lock_held_here(const rocksdb::Status &s) {
    return s.ToString().find("current process") != std::string::npos;
}

// Converts a failed RocksDB call; `what` names the database and the step.
status from_rocksdb(const rocksdb::Status &s, const std::string &what) {
    if (s.ok())
        return status::ok();
    std::string message = what + ": " + s.ToString();
    if (s.IsCorruption())
        return corruption(message);
    if (s.IsIOError())
        return io_error(message);
    if (s.IsNotFound())
        return not_found(message);
    return {error_code::internal, message};
}

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch())
        .count();
}

bool is_valid_threshold(float t) {
    return std::isfinite(t) && t >= 0.0f;
}

// The open RocksDB instance and its column family handles.
struct db_handles {
    rocksdb::DB *db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle *> all;
    std::array<rocksdb::ColumnFamilyHandle *, family_count> cf{};

    db_handles() = default;
    db_handles(const db_handles &) = delete;
    db_handles &operator=(const db_handles &) = delete;
    ~db_handles() {
        if (db == nullptr)
            return;
        for (rocksdb::ColumnFamilyHandle *h : all) {
            db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
        }
        db->Close().PermitUncheckedError();
        delete db;
    }
};

size_t family_index(const std::string &name) {
    for (size_t i = 0; i < family_count; ++i) {
        if (kFamilyNames[i] == name)
            return i;
    }
    return family_count;
}

// Opens the RocksDB database in `dir` with every family it has.
status open_rocksdb(const fs::path &dir, const std::string &shown,
                    const std::vector<std::string> &names, db_handles &h) {
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string &name : names) {
        size_t f = family_index(name);
        descriptors.emplace_back(name, f < family_count
                                           ? family_options(f)
                                           : rocksdb::ColumnFamilyOptions());
    }

    rocksdb::Status s = rocksdb::DB::Open(db_options(), dir.string(),
                                          descriptors, &h.all, &h.db);
    if (is_lock_error(s)) {
        return {error_code::in_use,
                "database in use: " + shown +
                    (is_lock_held_here(s) ? " is already open in this process"
                                          : " is open in another process")};
    }
    if (!s.ok()) {
        return corruption("cannot open database " + shown + ": " +
                          s.ToString());
    }

    for (size_t i = 0; i < names.size(); ++i) {
        size_t f = family_index(names[i]);
        if (f < family_count)
            h.cf[f] = h.all[i];
    }
    return status::ok();
}

// The metadata batch that makes an empty RocksDB database a facevec one.
void put_initial_meta(rocksdb::WriteBatch &b, rocksdb::ColumnFamilyHandle *meta,
                      const db_meta &m) {
    uint32_t threshold_bits = 0;
    std::memcpy(&threshold_bits, &m.threshold, sizeof threshold_bits);
    b.Put(meta, internal::kMetaSchemaVersion,
          internal::encode_u32(kSchemaVersion));
    b.Put(meta, internal::kMetaDim, internal::encode_u32(m.dim));
    b.Put(meta, internal::kMetaMetric, std::string(1, char(kMetricL2)));
    b.Put(meta, internal::kMetaFingerprint, m.model_fingerprint);
    b.Put(meta, internal::kMetaNormalized,
          std::string(1, char(m.normalized ? 1 : 0)));
    b.Put(meta, internal::kMetaThreshold, internal::encode_u32(threshold_bits));
    b.Put(meta, internal::kMetaNextId, internal::encode_u64(kFirstId));
    b.Put(meta, internal::kMetaFaceCount, internal::encode_u64(0));
    b.Put(meta, internal::kMetaPersonCount, internal::encode_u64(0));
}

status check_new_meta(const db_meta &m, const std::string &shown) {
    std::string what = "cannot create database " + shown + ": ";
    if (m.dim == 0 || m.dim > kMaxDim) {
        return invalid_argument(what + "dim " + std::to_string(m.dim) +
                                " is not in 1.." + std::to_string(kMaxDim));
    }
    if (!is_valid_threshold(m.threshold)) {
        return invalid_argument(what + "threshold " +
                                std::to_string(m.threshold) +
                                " is not a finite value >= 0");
    }
    return status::ok();
}

// Creates a complete database in a sibling folder, then renames it to
// `dir`, so a crash never leaves a half-made database at `dir`. When
// another process wins the race, its database is kept.
status create_database(const fs::path &dir, const std::string &shown,
                       const db_meta &m) {
    FACEVEC_RETURN_IF_ERROR(check_new_meta(m, shown));
    std::error_code ec;
    fs::create_directories(dir.parent_path(), ec);
    if (ec) {
        return io_error("cannot create database " + shown + ": " +
                        ec.message());
    }
    fs::path staging = dir;
    staging += ".creating-" + std::to_string(getpid());
    fs::remove_all(staging, ec);

    rocksdb::Status s;
    {
        rocksdb::DBOptions o = db_options();
        o.create_if_missing = true;
        o.create_missing_column_families = true;
        std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
        for (size_t f = 0; f < family_count; ++f) {
            descriptors.emplace_back(kFamilyNames[f], family_options(f));
        }
        db_handles h;
        s = rocksdb::DB::Open(o, staging.string(), descriptors, &h.all, &h.db);
        rocksdb::WriteBatch batch;
        if (s.ok()) {
            put_initial_meta(batch, h.all[meta_family], m);
            rocksdb::WriteOptions wo;
            wo.sync = true;
            s = h.db->Write(wo, &batch);
        }
    }
    if (!s.ok()) {
        fs::remove_all(staging, ec);
        return from_rocksdb(s, "cannot create database " + shown);
    }

    fs::rename(staging, dir, ec);
    if (ec) {
        fs::remove_all(staging, ec);
        bool raced = fs::exists(dir / kCurrentFileName);
        if (!raced) {
            return io_error("cannot create database " + shown + ": " +
                            ec.message());
        }
    }
    logger()->info("created database {} (dim {})", shown, m.dim);
    return status::ok();
}

// Finds the database folder, creating it when allowed.
status locate_database(const fs::path &dir, const std::string &shown,
                       const open_options &opts) {
    std::error_code ec;
    fs::file_status st = fs::status(dir, ec);
    if (st.type() == fs::file_type::not_found) {
        if (!opts.create_if_missing) {
            return not_found("database not found: " + shown +
                             " does not exist");
        }
        return create_database(dir, shown, opts.meta);
    }
    if (ec) {
        return io_error("cannot access database " + shown + ": " +
                        ec.message());
    }
    if (!fs::is_directory(st)) {
        return corruption("not a facevec database: " + shown +
                          " is not a directory");
    }

    bool empty = fs::is_empty(dir, ec);
    if (ec) {
        return io_error("cannot list database " + shown + ": " + ec.message());
    }
    if (empty) {
        if (!opts.create_if_missing) {
            return not_found("database not found: " + shown +
                             " is an empty directory");
        }
        return create_database(dir, shown, opts.meta);
    }
    if (!fs::exists(dir / kCurrentFileName, ec)) {
        return corruption("not a facevec database: " + shown +
                          " has no RocksDB CURRENT file");
    }
    return status::ok();
}

// Fails unless every facevec family is there. RocksDB lists only the
// default family for some broken MANIFESTs, so a read-only open tells a
// damaged database from a foreign one.
status check_families(const fs::path &dir, const std::string &shown,
                      const std::vector<std::string> &names) {
    for (const std::string &name : kFamilyNames) {
        if (std::find(names.begin(), names.end(), name) != names.end()) {
            continue;
        }
        std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
        for (const std::string &n : names) {
            descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
        }
        db_handles h;
        rocksdb::Status s = rocksdb::DB::OpenForReadOnly(
            db_options(), dir.string(), descriptors, &h.all, &h.db);
        if (!s.ok()) {
            return corruption("cannot read database " + shown + ": " +
                              s.ToString());
        }
        return corruption("not a facevec database: " + shown +
                          " has no column family " + in_quotes(name));
    }
    return status::ok();
}

}  // namespace

// The content digests of the few persons with many faces looked up last,
// so that a long import under such labels does not read all of their
// persons records again for every batch. Writes keep it current;
// `generation` counts them, so a lookup that read the records while a
// write went on does not install what it read.
struct digest_cache {
    struct person_digests {
        std::string person;
        std::unordered_multimap<uint64_t, uint64_t> ids;  // digest -> face
    };
    std::mutex mutex;
    uint64_t generation = 0;
    std::list<person_digests> persons;  // most recently used first

    // The entry of `person`, moved to the front; nullptr when absent.
    person_digests *find(std::string_view person) {
        for (auto it = persons.begin(); it != persons.end(); ++it) {
            if (it->person == person) {
                persons.splice(persons.begin(), persons, it);
                return &persons.front();
            }
        }
        return nullptr;
    }
};

struct store::impl {
    std::string shown;  // the path as the caller gave it, for messages
    fs::path dir;
    db_handles h;
    db_meta meta;
    rocksdb::WriteOptions write_options;
    uint64_t next_id = kFirstId;
    std::atomic<uint64_t> faces{0};
    std::atomic<uint64_t> persons{0};
    mutable digest_cache cache;

    // The cache's generation: take it before reading the records that
    // cache_person may install.
    uint64_t cache_generation() const {
        std::lock_guard lock(cache.mutex);
        return cache.generation;
    }

    // When `person` is the cached one, adds a (face id, key index) pair
    // to `candidates` for every face whose digest is in `digests` and
    // returns true; false otherwise.
    bool cached_candidates(
        std::string_view person,
        const std::unordered_multimap<uint64_t, size_t> &digests,
        std::vector<std::pair<uint64_t, size_t>> &candidates) const {
        std::lock_guard lock(cache.mutex);
        digest_cache::person_digests *cached = cache.find(person);
        if (cached == nullptr)
            return false;
        for (const auto &[digest, i] : digests) {
            auto [first, last] = cached->ids.equal_range(digest);
            for (; first != last; ++first)
                candidates.emplace_back(first->second, i);
        }
        return true;
    }

    // Makes `person`'s digests (read while the cache was at `generation`)
    // the cached ones, unless a write came in between.
    void cache_person(
        std::string_view person, uint64_t generation,
        const std::vector<std::pair<uint64_t, uint64_t>> &read) const {
        std::lock_guard lock(cache.mutex);
        if (cache.generation != generation)
            return;
        digest_cache::person_digests *cached = cache.find(person);
        if (cached == nullptr) {
            cache.persons.push_front({std::string(person), {}});
            if (cache.persons.size() > kCachedPersons)
                cache.persons.pop_back();
            cached = &cache.persons.front();
        }
        cached->ids.clear();
        cached->ids.reserve(read.size());
        for (const auto &[digest, id] : read)
            cached->ids.emplace(digest, id);
    }

    // After a write that changed `person`'s faces: adds the new faces'
    // digests to the cache (`added`: id and content hash), or with
    // `removed` drops the person from it.
    void note_write(std::string_view person, bool removed,
                    std::span<const std::pair<uint64_t, std::string_view>>
                        added = {}) const {
        std::lock_guard lock(cache.mutex);
        ++cache.generation;
        digest_cache::person_digests *cached = cache.find(person);
        if (cached == nullptr)
            return;
        if (removed) {
            cache.persons.pop_front();
            return;
        }
        for (const auto &[id, hash] : added) {
            if (!hash.empty())
                cached->ids.emplace(internal::content_digest(hash), id);
        }
    }

    rocksdb::ColumnFamilyHandle *cf(family f) const { return h.cf[f]; }

    // The value at `key`, nullopt when absent.
    result<std::optional<std::string>> get(
        family f, const std::string &key,
        const rocksdb::Snapshot *snapshot = nullptr) const {
        rocksdb::ReadOptions ro;
        ro.snapshot = snapshot;
        std::string value;
        rocksdb::Status s = h.db->Get(ro, cf(f), key, &value);
        if (s.IsNotFound())
            return std::optional<std::string>();
        if (!s.ok()) {
            return from_rocksdb(s, shown + ": reading " + kFamilyNames[f]);
        }
        return std::optional<std::string>(std::move(value));
    }

    status read_meta();
    status read_meta_u64(const char *key, uint64_t &v) const;
    status read_meta_u32(const char *key, uint32_t &v) const;
    status read_meta_byte(const char *key, uint8_t &v) const;
    status check_against(const open_options &opts) const;

    void put_counters(rocksdb::WriteBatch &b, uint64_t next, uint64_t faces_n,
                      uint64_t persons_n) const {
        b.Put(cf(meta_family), internal::kMetaNextId,
              internal::encode_u64(next));
        b.Put(cf(meta_family), internal::kMetaFaceCount,
              internal::encode_u64(faces_n));
        b.Put(cf(meta_family), internal::kMetaPersonCount,
              internal::encode_u64(persons_n));
    }

    // Puts the new face count (stored + added) of each person in `added`
    // (a person -> the batch's faces of theirs) into b, reading the stored
    // ones in one MultiGet; counts the persons not stored yet.
    status add_counts(
        const std::map<std::string_view, std::vector<size_t>> &added,
        rocksdb::WriteBatch &b, uint64_t &new_persons) const {
        std::vector<rocksdb::Slice> keys;
        keys.reserve(added.size());
        for (const auto &entry : added)
            keys.emplace_back(entry.first);
        std::vector<rocksdb::PinnableSlice> values(keys.size());
        std::vector<rocksdb::Status> statuses(keys.size());
        h.db->MultiGet(rocksdb::ReadOptions(), cf(person_counts_family),
                       keys.size(), keys.data(), values.data(), statuses.data(),
                       /*sorted_input=*/true);
        size_t i = 0;
        for (const auto &[person, members] : added) {
            const rocksdb::Status &st = statuses[i];
            uint64_t before = 0;
            if (st.IsNotFound()) {
                ++new_persons;
            } else if (!st.ok()) {
                return from_rocksdb(st, shown + ": reading the face count of " +
                                            in_quotes(std::string(person)));
            } else {
                before =
                    internal::decode_u64(values[i].ToStringView()).value_or(0);
            }
            b.Put(cf(person_counts_family), keys[i],
                  internal::encode_u64(before + members.size()));
            ++i;
        }
        return status::ok();
    }

    status write(rocksdb::WriteBatch &b, const std::string &what) {
        return from_rocksdb(h.db->Write(write_options, &b),
                            shown + ": " + what);
    }

    // Decodes the persons record at `it` (of `person`, whose prefix is
    // prefix_size bytes) into entries; corruption naming the person, the
    // record and what is wrong.
    status read_entries(const rocksdb::Iterator &it, size_t prefix_size,
                        const std::string &person,
                        std::vector<internal::person_entry> &entries) const;

    // The ids of a person's faces, sorted, and their persons keys.
    status faces_of(const std::string &person, std::vector<uint64_t> &ids,
                    std::vector<std::string> &keys) const;

    // Every persons key under the person's prefix, decodable or not.
    status person_keys(const std::string &person,
                       std::vector<std::string> &keys) const;

    // Puts into b the change that takes face `id` out of its person's
    // persons record: the record rewritten without it, or deleted when it
    // was the record's only face. One seek finds the record; the person's
    // other records are read only when it is not there. A corrupt record,
    // or a face no record lists, is logged and skipped: a damaged index
    // never blocks removal.
    status unlist_face(const std::string &person, uint64_t id,
                       rocksdb::WriteBatch &b) const;
    status wait_for_obsolete_files() const;
};

namespace {

std::string missing_meta(const std::string &shown, const char *key) {
    return shown + ": meta record '" + key + "' is missing";
}

std::string bad_meta(const std::string &shown, const char *key, size_t size) {
    return shown + ": meta record '" + key + "' has " + std::to_string(size) +
           " bytes";
}

}  // namespace

status store::impl::read_meta_u64(const char *key, uint64_t &v) const {
    auto got = get(meta_family, key);
    FACEVEC_RETURN_IF_ERROR(got.error());
    if (!got.value())
        return corruption(missing_meta(shown, key));
    auto decoded = internal::decode_u64(*got.value());
    if (!decoded)
        return corruption(bad_meta(shown, key, got.value()->size()));
    v = *decoded;
    return status::ok();
}

status store::impl::read_meta_u32(const char *key, uint32_t &v) const {
    auto got = get(meta_family, key);
    FACEVEC_RETURN_IF_ERROR(got.error());
    if (!got.value())
        return corruption(missing_meta(shown, key));
    auto decoded = internal::decode_u32(*got.value());
    if (!decoded)
        return corruption(bad_meta(shown, key, got.value()->size()));
    v = *decoded;
    return status::ok();
}

status store::impl::read_meta_byte(const char *key, uint8_t &v) const {
    auto got = get(meta_family, key);
    FACEVEC_RETURN_IF_ERROR(got.error());
    if (!got.value())
        return corruption(missing_meta(shown, key));
    if (got.value()->size() != 1) {
        return corruption(bad_meta(shown, key, got.value()->size()));
    }
    v = static_cast<uint8_t>((*got.value())[0]);
    return status::ok();
}

// Reads the database-wide metadata; the schema version first, so a newer
// layout is reported as such rather than as missing records.
status store::impl::read_meta() {
    auto version = get(meta_family, internal::kMetaSchemaVersion);
    FACEVEC_RETURN_IF_ERROR(version.error());
    if (!version.value()) {
        return corruption("not a facevec database: " + shown +
                          " has no schema version");
    }
    FACEVEC_RETURN_IF_ERROR(
        read_meta_u32(internal::kMetaSchemaVersion, meta.schema_version));
    if (meta.schema_version > kSchemaVersion) {
        return mismatch("database " + shown + " has schema version " +
                        std::to_string(meta.schema_version) +
                        ", expected at most " + std::to_string(kSchemaVersion) +
                        " (it was written by a newer facevec)");
    }
    if (meta.schema_version == 0) {
        return corruption(shown + ": schema version 0 is not valid");
    }
    if (meta.schema_version < kOldestReadableSchema) {
        return mismatch("database " + shown + " has schema version " +
                        std::to_string(meta.schema_version) + ", expected " +
                        std::to_string(kSchemaVersion) +
                        " (it was written by an older facevec; export it "
                        "with that version and import it again)");
    }

    uint8_t metric = 0;
    uint8_t normalized = 0;
    uint32_t threshold_bits = 0;
    uint64_t faces_n = 0;
    uint64_t persons_n = 0;
    FACEVEC_RETURN_IF_ERROR(read_meta_u32(internal::kMetaDim, meta.dim));
    FACEVEC_RETURN_IF_ERROR(read_meta_byte(internal::kMetaMetric, metric));
    FACEVEC_RETURN_IF_ERROR(
        read_meta_byte(internal::kMetaNormalized, normalized));
    FACEVEC_RETURN_IF_ERROR(
        read_meta_u32(internal::kMetaThreshold, threshold_bits));
    FACEVEC_RETURN_IF_ERROR(read_meta_u64(internal::kMetaNextId, next_id));
    FACEVEC_RETURN_IF_ERROR(read_meta_u64(internal::kMetaFaceCount, faces_n));
    FACEVEC_RETURN_IF_ERROR(
        read_meta_u64(internal::kMetaPersonCount, persons_n));
    auto fingerprint = get(meta_family, internal::kMetaFingerprint);
    FACEVEC_RETURN_IF_ERROR(fingerprint.error());
    if (!fingerprint.value()) {
        return corruption(missing_meta(shown, internal::kMetaFingerprint));
    }

    if (metric != kMetricL2) {
        return corruption(shown + ": unknown metric " + std::to_string(metric));
    }
    if (meta.dim == 0 || meta.dim > kMaxDim) {
        return corruption(shown + ": stored dim " + std::to_string(meta.dim) +
                          " is not in 1.." + std::to_string(kMaxDim));
    }
    if (next_id == 0 || next_id > kMaxId) {
        return corruption(shown + ": stored next id " +
                          std::to_string(next_id) + " is not in 1.." +
                          std::to_string(kMaxId));
    }
    meta.metric = metric_kind::l2;
    meta.normalized = normalized != 0;
    std::memcpy(&meta.threshold, &threshold_bits, sizeof meta.threshold);
    meta.model_fingerprint = std::move(*fingerprint.value());
    faces = faces_n;
    persons = persons_n;
    return status::ok();
}

status store::impl::check_against(const open_options &opts) const {
    if (opts.meta.dim != 0 && opts.meta.dim != meta.dim) {
        return mismatch("database " + shown + " has dim " +
                        std::to_string(meta.dim) + ", expected " +
                        std::to_string(opts.meta.dim));
    }
    if (!opts.meta.model_fingerprint.empty() &&
        opts.meta.model_fingerprint != meta.model_fingerprint) {
        return mismatch("database " + shown +
                        " was made with model fingerprint " +
                        in_quotes(meta.model_fingerprint) + ", expected " +
                        in_quotes(opts.meta.model_fingerprint));
    }
    return status::ok();
}

result<std::unique_ptr<store>> store::open(const std::string &path,
                                           const open_options &opts) {
    try {
        auto p = std::make_unique<impl>();
        p->shown = path;
        p->dir = fs::absolute(fs::path(path)).lexically_normal();
        if (!p->dir.has_filename())
            p->dir = p->dir.parent_path();
        p->write_options.sync = opts.sync;
        FACEVEC_RETURN_IF_ERROR(locate_database(p->dir, path, opts));

        std::vector<std::string> names;
        rocksdb::Status s = rocksdb::DB::ListColumnFamilies(
            db_options(), p->dir.string(), &names);
        if (!s.ok()) {
            return corruption("cannot read database " + path + ": " +
                              s.ToString());
        }
        FACEVEC_RETURN_IF_ERROR(check_families(p->dir, path, names));

        FACEVEC_RETURN_IF_ERROR(open_rocksdb(p->dir, path, names, p->h));
        FACEVEC_RETURN_IF_ERROR(p->read_meta());
        FACEVEC_RETURN_IF_ERROR(p->check_against(opts));
        logger()->debug("opened database {}: {} faces, {} persons", path,
                        p->faces.load(), p->persons.load());
        return std::unique_ptr<store>(new store(std::move(p)));
    } catch (const std::exception &e) {
        return status(error_code::internal,
                      "cannot open database " + path + ": " + e.what());
    }
}

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
store::~store() = default;

const db_meta &store::meta() const {
    return impl_->meta;
}

status store::set_threshold(float threshold) {
    if (!is_valid_threshold(threshold)) {
        return invalid_argument("threshold " + std::to_string(threshold) +
                                " is not a finite value >= 0");
    }
    uint32_t bits = 0;
    std::memcpy(&bits, &threshold, sizeof bits);
    rocksdb::WriteBatch b;
    b.Put(impl_->cf(meta_family), internal::kMetaThreshold,
          internal::encode_u32(bits));
    FACEVEC_RETURN_IF_ERROR(impl_->write(b, "setting the threshold"));
    impl_->meta.threshold = threshold;
    return status::ok();
}

namespace {

status check_batch(std::span<const face_record> faces, uint32_t dim) {
    for (size_t i = 0; i < faces.size(); ++i) {
        auto item = [i] {
            return "face " + std::to_string(i) + " of the batch";
        };
        if (faces[i].embedding.size() != dim) {
            return invalid_argument(item() + ": embedding has " +
                                    std::to_string(faces[i].embedding.size()) +
                                    " values, expected " + std::to_string(dim));
        }
        status label = validate_label(faces[i].person);
        if (!label)
            return label.with_context(item());
    }
    return status::ok();
}

}  // namespace

result<std::vector<uint64_t>> store::put_batch(std::span<face_record> faces) {
    impl &s = *impl_;
    FACEVEC_RETURN_IF_ERROR(check_batch(faces, s.meta.dim));
    if (faces.empty())
        return std::vector<uint64_t>();
    if (faces.size() > kMaxId - s.next_id) {
        return status(error_code::resource_exhausted,
                      s.shown + ": face ids are used up (next id " +
                          std::to_string(s.next_id) + ")");
    }

    // The batch's faces by person, in id order, and the bytes it will
    // take: a batch reserved too small is copied each time it grows.
    std::map<std::string_view, std::vector<size_t>> by_person;
    size_t vector_bytes = size_t{s.meta.dim} * sizeof(float);
    size_t batch_bytes = kBatchOverheadBytes;
    for (size_t i = 0; i < faces.size(); ++i) {
        const face_record &f = faces[i];
        by_person[f.person].push_back(i);
        batch_bytes += vector_bytes + 2 * f.person.size() + f.source.size() +
                       f.model_fingerprint.size() + 2 * f.content_hash.size() +
                       kFaceOverheadBytes;
    }
    rocksdb::WriteBatch batch(batch_bytes);
    uint64_t new_persons = 0;
    FACEVEC_RETURN_IF_ERROR(s.add_counts(by_person, batch, new_persons));

    // The faces records in id order, then each person's records (a run of
    // at most kMaxEntriesPerRecord faces each, keyed by its last id) in
    // key order: each memtable insert lands next to the previous one.
    std::vector<uint64_t> ids(faces.size());
    std::string value;
    int64_t now = now_us();
    for (size_t i = 0; i < faces.size(); ++i) {
        face_record &f = faces[i];
        ids[i] = s.next_id + i;
        if (f.enrolled_at_us == 0)
            f.enrolled_at_us = now;
        internal::encode_face_value(f, s.meta.model_fingerprint, value);
        batch.Put(s.cf(faces_family), internal::id_key(ids[i]), value);
    }
    for (const auto &[person, members] : by_person) {
        for (size_t from = 0; from < members.size();
             from += kMaxEntriesPerRecord) {
            size_t to = std::min(members.size(), from + kMaxEntriesPerRecord);
            value.clear();
            uint64_t previous = 0;
            for (size_t m = from; m < to; ++m) {
                size_t i = members[m];
                internal::append_person_entry(value, previous, ids[i],
                                              faces[i].content_hash);
                previous = ids[i];
            }
            batch.Put(s.cf(persons_family),
                      internal::person_key(person, previous), value);
        }
    }
    uint64_t next = s.next_id + ids.size();
    uint64_t faces_n = s.faces + ids.size();
    uint64_t persons_n = s.persons + new_persons;
    s.put_counters(batch, next, faces_n, persons_n);

    FACEVEC_RETURN_IF_ERROR(s.write(
        batch,
        "writing a batch of " + std::to_string(faces.size()) + " faces"));
    for (size_t i = 0; i < faces.size(); ++i)
        faces[i].id = ids[i];
    s.next_id = next;
    s.faces = faces_n;
    s.persons = persons_n;
    std::vector<std::pair<uint64_t, std::string_view>> added;
    for (const auto &[person, members] : by_person) {
        added.clear();
        for (size_t i : members)
            added.emplace_back(ids[i], faces[i].content_hash);
        s.note_write(person, /*removed=*/false, added);
    }
    return ids;
}

status store::impl::read_entries(
    const rocksdb::Iterator &it, size_t prefix_size, const std::string &person,
    std::vector<internal::person_entry> &entries) const {
    auto key_id =
        internal::id_of_person_key(it.key().ToStringView(), prefix_size);
    std::string what = shown + ": bad persons record of " + in_quotes(person);
    if (!key_id) {
        return corruption(what + ": its key has " +
                          std::to_string(it.key().size()) + " bytes");
    }
    what += " (last id " + std::to_string(*key_id) + ")";
    const char *why =
        internal::decode_person_entries(it.value().ToStringView(), entries);
    if (why != nullptr)
        return corruption(what + ": " + why);
    if (entries.back().id > *key_id) {
        return corruption(what + ": lists face " +
                          std::to_string(entries.back().id) +
                          ", past its key's id");
    }
    return status::ok();
}

status store::impl::faces_of(const std::string &person,
                             std::vector<uint64_t> &ids,
                             std::vector<std::string> &keys) const {
    std::string prefix = internal::person_prefix(person);
    std::unique_ptr<rocksdb::Iterator> it(
        h.db->NewIterator(rocksdb::ReadOptions(), cf(persons_family)));
    std::vector<internal::person_entry> entries;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
        FACEVEC_RETURN_IF_ERROR(
            read_entries(*it, prefix.size(), person, entries));
        for (const internal::person_entry &e : entries)
            ids.push_back(e.id);
        keys.push_back(it->key().ToString());
    }
    FACEVEC_RETURN_IF_ERROR(from_rocksdb(
        it->status(), shown + ": listing faces of " + in_quotes(person)));
    std::sort(ids.begin(), ids.end());
    return status::ok();
}

status store::impl::person_keys(const std::string &person,
                                std::vector<std::string> &keys) const {
    std::string prefix = internal::person_prefix(person);
    std::unique_ptr<rocksdb::Iterator> it(
        h.db->NewIterator(rocksdb::ReadOptions(), cf(persons_family)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
        keys.push_back(it->key().ToString());
    }
    return from_rocksdb(it->status(),
                        shown + ": listing faces of " + in_quotes(person));
}

result<std::vector<uint64_t>> store::remove_person(const std::string &person) {
    impl &s = *impl_;
    std::vector<uint64_t> ids;
    std::vector<std::string> keys;
    auto count = s.get(person_counts_family, person);
    FACEVEC_RETURN_IF_ERROR(count.error());
    uint64_t expected =
        count.value() ? internal::decode_u64(*count.value()).value_or(0) : 0;
    status listed = s.faces_of(person, ids, keys);
    if (!listed || ids.size() != expected) {
        // The persons index is damaged: find the faces the long way, so
        // that a person can always be removed.
        logger()->warn("{}; finding the faces of {} by a full scan",
                       listed ? s.shown + ": the persons index lists " +
                                    std::to_string(ids.size()) + " faces of " +
                                    in_quotes(person) + ", its count says " +
                                    std::to_string(expected)
                              : listed.message(),
                       in_quotes(person));
        ids.clear();
        keys.clear();
        FACEVEC_RETURN_IF_ERROR(s.person_keys(person, keys));
        FACEVEC_RETURN_IF_ERROR(load_faces(
            [&](uint64_t id, std::string_view label, std::string_view) {
                if (label == person)
                    ids.push_back(id);
            }));
    }
    if (ids.empty() && keys.empty() && !count.value()) {
        return not_found("person not found: " + in_quotes(person));
    }

    rocksdb::WriteBatch batch;
    for (uint64_t id : ids)
        batch.Delete(s.cf(faces_family), internal::id_key(id));
    for (const std::string &key : keys)
        batch.Delete(s.cf(persons_family), key);
    batch.Delete(s.cf(person_counts_family), person);

    uint64_t faces_n = s.faces - std::min<uint64_t>(s.faces, ids.size());
    bool existed = count.value() || !ids.empty() || !keys.empty();
    uint64_t persons_n = s.persons - (existed && s.persons > 0 ? 1 : 0);
    s.put_counters(batch, s.next_id, faces_n, persons_n);
    FACEVEC_RETURN_IF_ERROR(
        s.write(batch, "removing person " + in_quotes(person)));
    s.note_write(person, /*removed=*/true);
    s.faces = faces_n;
    s.persons = persons_n;
    return ids;
}

status store::impl::unlist_face(const std::string &person, uint64_t id,
                                rocksdb::WriteBatch &b) const {
    std::string prefix = internal::person_prefix(person);
    std::unique_ptr<rocksdb::Iterator> it(
        h.db->NewIterator(rocksdb::ReadOptions(), cf(persons_family)));
    std::vector<internal::person_entry> entries;
    status damaged = status::ok();  // the first record that failed
    // Takes the face out of the record at `it` when it lists it.
    auto unlist_here = [&] {
        status st = read_entries(*it, prefix.size(), person, entries);
        if (!st) {
            if (damaged)
                damaged = st;
            return false;
        }
        auto listed = std::find_if(
            entries.begin(), entries.end(),
            [id](const internal::person_entry &e) { return e.id == id; });
        if (listed == entries.end())
            return false;
        entries.erase(listed);
        if (entries.empty()) {
            b.Delete(cf(persons_family), it->key());
            return true;
        }
        std::string value;
        uint64_t previous = 0;
        for (const internal::person_entry &e : entries) {
            internal::append_person_entry(value, previous, e);
            previous = e.id;
        }
        b.Put(cf(persons_family), it->key(), value);
        return true;
    };

    // Runs never overlap: the first key at or after the face's own holds
    // it, unless the index is damaged.
    it->Seek(internal::person_key(person, id));
    if (it->Valid() && it->key().starts_with(prefix) && unlist_here())
        return status::ok();
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
        if (unlist_here())
            return status::ok();
    }
    FACEVEC_RETURN_IF_ERROR(from_rocksdb(
        it->status(), shown + ": listing faces of " + in_quotes(person)));
    if (damaged) {
        logger()->error("{}: face {} is missing from the persons index of {}",
                        shown, id, in_quotes(person));
    } else {
        logger()->error("{}; face {} may be listed there", damaged.message(),
                        id);
    }
    return status::ok();
}

status store::remove_face(uint64_t id) {
    impl &s = *impl_;
    std::string key = internal::id_key(id);
    auto bytes = s.get(faces_family, key);
    FACEVEC_RETURN_IF_ERROR(bytes.error());
    if (!bytes.value()) {
        return not_found("face " + std::to_string(id) + " not found");
    }
    face_record f;
    f.id = id;
    std::string_view meta;
    std::string_view embedding;
    if (!internal::split_face_value(*bytes.value(), s.meta.dim, meta,
                                    embedding) ||
        !internal::decode_face_meta(meta, s.meta.model_fingerprint, f)) {
        return corruption(s.shown + ": face " + std::to_string(id) +
                          ": record is corrupt");
    }

    rocksdb::WriteBatch batch;
    batch.Delete(s.cf(faces_family), key);
    FACEVEC_RETURN_IF_ERROR(s.unlist_face(f.person, id, batch));

    // The person's count, and the person itself when this was the last.
    // A missing or unreadable count leaves the person total alone.
    auto count = s.get(person_counts_family, f.person);
    FACEVEC_RETURN_IF_ERROR(count.error());
    std::optional<uint64_t> before;
    if (count.value())
        before = internal::decode_u64(*count.value());
    uint64_t persons_n = s.persons;
    if (!before) {
        logger()->error("{}: the face count of {} is missing or corrupt",
                        s.shown, in_quotes(f.person));
    } else if (*before <= 1) {
        batch.Delete(s.cf(person_counts_family), f.person);
        persons_n -= persons_n > 0 ? 1 : 0;
    } else {
        batch.Put(s.cf(person_counts_family), f.person,
                  internal::encode_u64(*before - 1));
    }

    uint64_t faces_n = s.faces - (s.faces > 0 ? 1 : 0);
    s.put_counters(batch, s.next_id, faces_n, persons_n);
    FACEVEC_RETURN_IF_ERROR(
        s.write(batch, "removing face " + std::to_string(id)));
    s.note_write(f.person, /*removed=*/true);
    s.faces = faces_n;
    s.persons = persons_n;
    return status::ok();
}

namespace {

// Splits a faces record of a database with metadata `db` and decodes
// its metadata into f (and, when `embedding` is given, copies the dim
// floats there); false when corrupt.
bool decode_face(std::string_view value, const db_meta &db, face_record &f,
                 float *embedding) {
    std::string_view meta;
    std::string_view vector;
    if (!internal::split_face_value(value, db.dim, meta, vector) ||
        !internal::decode_face_meta(meta, db.model_fingerprint, f)) {
        return false;
    }
    if (embedding != nullptr)
        std::memcpy(embedding, vector.data(), vector.size());
    return true;
}

}  // namespace

status store::scan(const std::function<status(const face_record &)> &fn,
                   bool with_embedding) const {
    const impl &s = *impl_;
    rocksdb::ManagedSnapshot snapshot(s.h.db);
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    ro.readahead_size = kScanReadaheadBytes;
    std::unique_ptr<rocksdb::Iterator> it(
        s.h.db->NewIterator(ro, s.cf(faces_family)));

    face_record f;
    if (with_embedding)
        f.embedding.resize(s.meta.dim);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto id = internal::decode_u64(it->key().ToStringView());
        if (!id ||
            !decode_face(it->value().ToStringView(), s.meta, f,
                         with_embedding ? f.embedding.data() : nullptr)) {
            return corruption(s.shown + ": face " +
                              (id ? std::to_string(*id) : "with a bad key") +
                              ": record is corrupt or its embedding is not " +
                              std::to_string(s.meta.dim) + " floats");
        }
        f.id = *id;
        FACEVEC_RETURN_IF_ERROR(fn(f));
    }
    return from_rocksdb(it->status(), s.shown + ": scanning faces");
}

status store::load_all(std::vector<uint64_t> &ids, std::vector<float> &vectors,
                       std::vector<std::string> &persons) const {
    ids.clear();
    vectors.clear();
    persons.clear();
    size_t dim = impl_->meta.dim;
    size_t expected = impl_->faces;
    ids.reserve(expected);
    persons.reserve(expected);
    vectors.reserve(expected * dim);
    FACEVEC_RETURN_IF_ERROR(load_faces(
        [&](uint64_t id, std::string_view person, std::string_view embedding) {
            size_t row = ids.size();
            vectors.resize((row + 1) * dim);
            std::memcpy(vectors.data() + row * dim, embedding.data(),
                        embedding.size());
            ids.push_back(id);
            persons.emplace_back(person);
        }));
    return status::ok();
}

status store::load_faces(const face_sink &sink) const {
    const impl &s = *impl_;
    rocksdb::ManagedSnapshot snapshot(s.h.db);
    rocksdb::ReadOptions ro = internal::bulk_read_options();
    ro.snapshot = snapshot.snapshot();
    std::unique_ptr<rocksdb::Iterator> it(
        s.h.db->NewIterator(ro, s.cf(faces_family)));

    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto id = internal::decode_u64(it->key().ToStringView());
        std::string_view meta;
        std::string_view vector;
        std::string_view person;
        if (!id ||
            !internal::split_face_value(it->value().ToStringView(), s.meta.dim,
                                        meta, vector) ||
            !internal::decode_face_person(meta, person)) {
            return corruption(s.shown + ": face " +
                              (id ? std::to_string(*id) : "with a bad key") +
                              ": record is corrupt or its embedding is not " +
                              std::to_string(s.meta.dim) + " floats");
        }
        sink(*id, person, vector);
    }
    return from_rocksdb(it->status(), s.shown + ": loading faces");
}

std::optional<face_record> store::get_face(uint64_t id) const {
    const impl &s = *impl_;
    auto bytes = s.get(faces_family, internal::id_key(id));

    // Limitation: the signature has no status; read errors are logged.
    if (!bytes) {
        logger()->error("{}", bytes.error().to_string());
        return std::nullopt;
    }
    if (!bytes.value())
        return std::nullopt;

    face_record f;
    f.id = id;
    f.embedding.resize(s.meta.dim);
    if (!decode_face(*bytes.value(), s.meta, f, f.embedding.data())) {
        logger()->error("{}: face {}: record is corrupt", s.shown, id);
        return std::nullopt;
    }
    return f;
}

std::vector<std::pair<std::string, uint64_t>> store::list_persons(
    const std::string &after, size_t limit) const {
    const impl &s = *impl_;
    std::vector<std::pair<std::string, uint64_t>> out;
    if (limit == 0)
        return out;
    std::unique_ptr<rocksdb::Iterator> it(s.h.db->NewIterator(
        rocksdb::ReadOptions(), s.cf(person_counts_family)));
    it->Seek(after);
    if (it->Valid() && !after.empty() && it->key() == after)
        it->Next();
    for (; it->Valid() && out.size() < limit; it->Next()) {
        uint64_t n =
            internal::decode_u64(it->value().ToStringView()).value_or(0);
        out.emplace_back(it->key().ToString(), n);
    }
    if (!it->status().ok()) {
        logger()->error("{}: listing persons: {}", s.shown,
                        it->status().ToString());
    }
    return out;
}

bool store::has_content(const std::string &person,
                        const std::string &content_hash) const {
    const std::pair<std::string, std::string> key(person, content_hash);
    auto found = has_contents(std::span(&key, 1));
    if (!found) {
        logger()->error("{}", found.error().message());
        return false;
    }
    return found.value().front();
}

result<std::vector<bool>> store::has_contents(
    std::span<const std::pair<std::string, std::string>> keys) const {
    const impl &s = *impl_;
    std::vector<bool> found(keys.size(), false);

    // The digests asked about, by person (in key order, so each seek
    // lands near the last); each person's records are read once.
    std::map<std::string_view, std::unordered_multimap<uint64_t, size_t>>
        wanted;
    for (size_t i = 0; i < keys.size(); ++i) {
        if (!keys[i].second.empty()) {
            wanted[keys[i].first].emplace(
                internal::content_digest(keys[i].second), i);
        }
    }
    if (wanted.empty())
        return found;

    // The cache's generation before the snapshot: a write after it bumps
    // the generation, so what this call reads is never cached as newer.
    uint64_t generation = s.cache_generation();
    rocksdb::ManagedSnapshot snapshot(s.h.db);
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();

    // Faces whose digest matches, each with the key it may answer.
    std::vector<std::pair<uint64_t, size_t>> candidates;
    std::unique_ptr<rocksdb::Iterator> it(
        s.h.db->NewIterator(ro, s.cf(persons_family)));
    std::vector<internal::person_entry> entries;
    std::vector<std::pair<uint64_t, uint64_t>> read;  // digest, id
    for (const auto &[person, digests] : wanted) {
        if (s.cached_candidates(person, digests, candidates))
            continue;
        read.clear();
        const std::string label(person);
        std::string prefix = internal::person_prefix(person);
        uint64_t listed = 0;
        for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
             it->Next()) {
            FACEVEC_RETURN_IF_ERROR(
                s.read_entries(*it, prefix.size(), label, entries));
            listed += entries.size();
            for (const internal::person_entry &e : entries) {
                if (!e.hashed)
                    continue;
                auto [first, last] = digests.equal_range(e.digest);
                for (; first != last; ++first)
                    candidates.emplace_back(e.id, first->second);
                read.emplace_back(e.digest, e.id);
            }
        }
        FACEVEC_RETURN_IF_ERROR(
            from_rocksdb(it->status(), s.shown +
                                           ": looking up the content "
                                           "hashes of " +
                                           in_quotes(label)));
        // A lost record would make its faces look absent: the index must
        // list as many faces as the person's count says.
        auto count = s.get(person_counts_family, label, ro.snapshot);
        FACEVEC_RETURN_IF_ERROR(count.error());
        uint64_t expected =
            count.value() ? internal::decode_u64(*count.value()).value_or(0)
                          : 0;
        if (listed != expected) {
            return corruption(s.shown + ": the persons index lists " +
                              std::to_string(listed) + " faces of " +
                              in_quotes(label) + ", its count says " +
                              std::to_string(expected) +
                              " (remove the person and enroll them again)");
        }
        if (read.size() >= kCachedPersonFaces)
            s.cache_person(person, generation, read);
    }
    if (candidates.empty())
        return found;

    // A digest match is confirmed by the full hash in the face record,
    // all read at once in id order.
    std::sort(candidates.begin(), candidates.end());
    std::vector<std::string> id_keys;
    id_keys.reserve(candidates.size());
    for (const auto &candidate : candidates)
        id_keys.push_back(internal::id_key(candidate.first));
    std::vector<rocksdb::Slice> slices(id_keys.begin(), id_keys.end());
    std::vector<rocksdb::PinnableSlice> values(slices.size());
    std::vector<rocksdb::Status> statuses(slices.size());
    s.h.db->MultiGet(ro, s.cf(faces_family), slices.size(), slices.data(),
                     values.data(), statuses.data(), /*sorted_input=*/true);
    face_record f;
    for (size_t c = 0; c < candidates.size(); ++c) {
        auto [id, i] = candidates[c];
        if (statuses[c].IsNotFound())
            continue;
        FACEVEC_RETURN_IF_ERROR(from_rocksdb(
            statuses[c], s.shown + ": reading face " + std::to_string(id)));
        if (!decode_face(values[c].ToStringView(), s.meta, f, nullptr)) {
            return corruption(s.shown + ": face " + std::to_string(id) +
                              ": record is corrupt");
        }
        if (f.person == keys[i].first && f.content_hash == keys[i].second)
            found[i] = true;
    }
    return found;
}

uint64_t store::face_count() const {
    return impl_->faces;
}
uint64_t store::person_count() const {
    return impl_->persons;
}

uint64_t store::disk_bytes() const {
    std::error_code ec;
    uint64_t total = 0;
    for (const fs::directory_entry &e :
         fs::directory_iterator(impl_->dir, ec)) {
        std::error_code size_ec;
        uint64_t n = e.is_regular_file(size_ec) ? e.file_size(size_ec) : 0;
        if (!size_ec)
            total += n;
    }
    return total;
}

// RocksDB deletes the files a flush or compaction made obsolete right
// after the job; wait until the folder holds only live SSTs and WAL.
status store::impl::wait_for_obsolete_files() const {
    auto deadline = std::chrono::steady_clock::now() + kPurgeWaitLimit;
    std::string stale;
    while (true) {
        std::vector<rocksdb::LiveFileMetaData> live;
        h.db->GetLiveFilesMetaData(&live);
        std::unique_ptr<rocksdb::LogFile> wal;
        FACEVEC_RETURN_IF_ERROR(
            from_rocksdb(h.db->GetCurrentWalFile(&wal), shown + ": purge"));
        std::string wal_name = fs::path(wal->PathName()).filename().string();

        stale.clear();
        std::error_code ec;
        for (const fs::directory_entry &e : fs::directory_iterator(dir, ec)) {
            std::string name = e.path().filename().string();
            bool is_sst = name.ends_with(kSstSuffix);
            bool is_live = std::any_of(
                live.begin(), live.end(),
                [&](const auto &m) { return m.relative_filename == name; });
            if ((is_sst && !is_live) ||
                (name.ends_with(kWalSuffix) && name != wal_name)) {
                stale = name;
            }
        }
        if (ec) {
            return io_error(shown + ": purge: listing files: " + ec.message());
        }
        if (stale.empty())
            return status::ok();
        if (std::chrono::steady_clock::now() > deadline)
            break;
        std::this_thread::sleep_for(kPurgePollInterval);
    }
    return io_error(shown + ": purge: obsolete file " + stale +
                    " still present after " +
                    std::to_string(kPurgeWaitLimit.count()) + " s");
}

status store::purge() {
    impl &s = *impl_;
    rocksdb::FlushOptions fo;
    fo.wait = true;
    FACEVEC_RETURN_IF_ERROR(
        from_rocksdb(s.h.db->Flush(fo, s.h.all), s.shown + ": purge: flush"));

    rocksdb::CompactRangeOptions co;
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    co.exclusive_manual_compaction = true;
    for (rocksdb::ColumnFamilyHandle *h : s.h.all) {
        FACEVEC_RETURN_IF_ERROR(
            from_rocksdb(s.h.db->CompactRange(co, h, nullptr, nullptr),
                         s.shown + ": purge: compacting " + h->GetName()));
    }
    FACEVEC_RETURN_IF_ERROR(s.wait_for_obsolete_files());
    logger()->info("purged {}: {} bytes on disk", s.shown, disk_bytes());
    return status::ok();
}

}  // namespace facevec::storage
