// Tests of the RocksDB face store: round trips, ids, metadata checks,
// locking, crash atomicity, removal and purge, labels.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "storage/codec.h"
#include "storage/store.h"
#include "tests/test_util.h"

extern char **environ;

namespace facevec::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr uint32_t kDim = 16;
constexpr const char *kFingerprint = "test-model-v1";
constexpr float kThreshold = 0.8f;
constexpr uint32_t kSeed = 20261204;

// The child programs: this test binary run again with one test selected.
constexpr const char *kChildDbEnv = "FACEVEC_STORE_TEST_CHILD_DB";
constexpr int kChildReportFd = 3;
constexpr size_t kKillBatchFaces = 50;
constexpr size_t kKillAfterBatches = 30;
constexpr size_t kChildMaxBatches = 100000;

db_meta test_meta(uint32_t dim = kDim) {
    db_meta m;
    m.dim = dim;
    m.model_fingerprint = kFingerprint;
    m.normalized = true;
    m.threshold = kThreshold;
    return m;
}

open_options create_options(uint32_t dim = kDim) {
    open_options o;
    o.create_if_missing = true;
    o.meta = test_meta(dim);
    return o;
}

// dim floats from a fixed seed: distinctive bytes for the purge test.
std::vector<float> random_vector(uint32_t dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> v(dim);
    for (float &x : v)
        x = u(rng);
    return v;
}

face_record make_face(const std::string &person, uint32_t seed,
                      uint32_t dim = kDim) {
    face_record f;
    f.person = person;
    f.embedding = random_vector(dim, seed);
    f.source = "/photos/" + person + "/" + std::to_string(seed) + ".jpg";
    f.model_fingerprint = kFingerprint;
    f.enrolled_at_us = 1700000000000000 + seed;
    f.content_hash = "sha256:" + std::to_string(seed);
    return f;
}

std::unique_ptr<store> open_ok(const std::string &path,
                               const open_options &o = create_options()) {
    auto r = store::open(path, o);
    EXPECT_TRUE(r.is_ok()) << r.error().to_string();
    return r.is_ok() ? std::move(r).value() : nullptr;
}

std::vector<uint64_t> put_ok(store &s, std::vector<face_record> faces) {
    auto r = s.put_batch(faces);
    EXPECT_TRUE(r.is_ok()) << r.error().to_string();
    return r.is_ok() ? r.value() : std::vector<uint64_t>();
}

void expect_same_face(const face_record &a, const face_record &b) {
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.person, b.person);
    EXPECT_EQ(a.embedding, b.embedding);
    EXPECT_EQ(a.source, b.source);
    EXPECT_EQ(a.model_fingerprint, b.model_fingerprint);
    EXPECT_EQ(a.enrolled_at_us, b.enrolled_at_us);
    EXPECT_EQ(a.content_hash, b.content_hash);
}

// True when some file in `dir` contains the raw bytes of `v`.
bool bytes_in_dir(const fs::path &dir, const std::vector<float> &v) {
    std::string needle(reinterpret_cast<const char *>(v.data()),
                       v.size() * sizeof(float));
    for (const auto &e : fs::recursive_directory_iterator(dir)) {
        if (!e.is_regular_file())
            continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::string data((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
        if (data.find(needle) != std::string::npos)
            return true;
    }
    return false;
}

// Opens a database with plain RocksDB, every column family, to write
// records by hand.
struct raw_db {
    rocksdb::DB *db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle *> handles;
    std::vector<std::string> names;

    explicit raw_db(const std::string &path) {
        rocksdb::Options o;
        EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(o, path, &names).ok());
        std::vector<rocksdb::ColumnFamilyDescriptor> d;
        for (const auto &n : names)
            d.emplace_back(n, o);
        EXPECT_TRUE(rocksdb::DB::Open(o, path, d, &handles, &db).ok());
    }
    ~raw_db() {
        for (auto *h : handles) {
            db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
        }
        delete db;
    }
    rocksdb::ColumnFamilyHandle *family(const std::string &name) const {
        auto it = std::find(names.begin(), names.end(), name);
        return handles[it - names.begin()];
    }
};

// Creates a database at `path` holding `batches`, one put_batch each,
// and returns their ids batch by batch.
std::vector<std::vector<uint64_t>> create_with(
    const std::string &path,
    const std::vector<std::vector<face_record>> &batches) {
    std::vector<std::vector<uint64_t>> ids;
    auto s = open_ok(path);
    for (const auto &batch : batches)
        ids.push_back(s ? put_ok(*s, batch) : std::vector<uint64_t>());
    return ids;
}

// Damages a closed database as a failing disk or a stray tool would:
// puts `value` at `key` of `family` with plain RocksDB, or deletes the
// key when there is no value.
void damage(const std::string &path, const char *family, const std::string &key,
            std::optional<std::string> value) {
    raw_db raw(path);
    rocksdb::ColumnFamilyHandle *f = raw.family(family);
    rocksdb::Status st =
        value ? raw.db->Put(rocksdb::WriteOptions(), f, key, *value)
              : raw.db->Delete(rocksdb::WriteOptions(), f, key);
    EXPECT_TRUE(st.ok()) << st.ToString();
}

// ---- child processes ----------------------------------------------------

struct child {
    pid_t pid = -1;
    int report_fd = -1;
};

// Runs this program again with only `test` selected and the database
// path in the environment; the child writes its report to kChildReportFd.
child spawn_child(const std::string &test, const std::string &db) {
    std::string filter = "--gtest_filter=" + test;
    std::string db_env = std::string(kChildDbEnv) + "=" + db;
    std::vector<char *> argv = {const_cast<char *>("storage_test"),
                                filter.data(), nullptr};
    std::vector<char *> envp;
    for (char **e = environ; *e != nullptr; ++e)
        envp.push_back(*e);
    envp.push_back(db_env.data());
    envp.push_back(nullptr);

    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        // Only async-signal-safe calls between fork and exec.
        dup2(fds[1], kChildReportFd);
        execve("/proc/self/exe", argv.data(), envp.data());
        _exit(127);
    }
    close(fds[1]);
    return {pid, fds[0]};
}

// The next line the child reported, nullopt at end of file.
std::optional<std::string> read_line(int fd) {
    std::string line;
    char c = 0;
    while (read(fd, &c, 1) == 1) {
        if (c == '\n')
            return line;
        line.push_back(c);
    }
    return line.empty() ? std::nullopt : std::optional<std::string>(line);
}

void report(const std::string &line) {
    std::string l = line + "\n";
    ASSERT_EQ(write(kChildReportFd, l.data(), l.size()),
              static_cast<ssize_t>(l.size()));
}

int wait_child(pid_t pid) {
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

const char *child_db() {
    return std::getenv(kChildDbEnv);
}

// Child of InUseFromAnotherProcess: reports the open's code and message.
TEST(StoreChild, OpenAndReport) {
    if (child_db() == nullptr) {
        GTEST_SKIP() << "runs only as the child of "
                        "StoreTest.OpenFailsInUseFromAnotherProcess";
    }
    open_options o;
    auto r = store::open(child_db(), o);
    report(error_code_name(r.error().code()));
    report(r.error().message());
}

// Child of ReopenAfterKillKeepsAcknowledgedBatches: writes batches and
// reports the faces acknowledged so far, until killed.
TEST(StoreChild, WriteUntilKilled) {
    if (child_db() == nullptr) {
        GTEST_SKIP() << "runs only as the child of "
                        "StoreTest.ReopenAfterKillKeepsAcknowledgedBatches";
    }
    auto s = open_ok(child_db());
    ASSERT_NE(s, nullptr);
    const std::vector<std::string> persons = {"ana", "bo", "cy"};
    for (size_t b = 0; b < kChildMaxBatches; ++b) {
        std::vector<face_record> batch;
        for (size_t i = 0; i < kKillBatchFaces; ++i) {
            uint32_t seed = static_cast<uint32_t>(b * kKillBatchFaces + i);
            batch.push_back(make_face(persons[seed % persons.size()], seed));
        }
        ASSERT_TRUE(s->put_batch(batch).is_ok());
        report(std::to_string(s->face_count()));
    }
}

// ---- round trips and ids ------------------------------------------------

TEST(StoreTest, ReopenRoundTripsEveryField) {
    testing::temp_dir dir;
    std::vector<face_record> faces = {
        make_face("alice", 1), make_face("alice", 2), make_face("bob", 3)};
    faces[2].content_hash.clear();
    faces[2].model_fingerprint = "";
    std::vector<uint64_t> ids;
    {
        auto s = open_ok(dir.str("db"));
        ASSERT_NE(s, nullptr);
        ids = put_ok(*s, faces);
        ASSERT_TRUE(s->set_threshold(1.25f).is_ok());
    }
    ASSERT_EQ(ids.size(), 3u);
    for (size_t i = 0; i < ids.size(); ++i)
        faces[i].id = ids[i];

    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->meta().schema_version, kSchemaVersion);
    EXPECT_EQ(s->meta().dim, kDim);
    EXPECT_EQ(s->meta().metric, metric_kind::l2);
    EXPECT_EQ(s->meta().model_fingerprint, kFingerprint);
    EXPECT_TRUE(s->meta().normalized);
    EXPECT_EQ(s->meta().threshold, 1.25f);
    EXPECT_EQ(s->face_count(), 3u);
    EXPECT_EQ(s->person_count(), 2u);
    EXPECT_GT(s->disk_bytes(), 0u);
    for (const face_record &f : faces) {
        auto got = s->get_face(f.id);
        ASSERT_TRUE(got.has_value()) << f.id;
        expect_same_face(*got, f);
    }
    EXPECT_FALSE(s->get_face(ids.back() + 1).has_value());
    EXPECT_TRUE(s->has_content("alice", faces[0].content_hash));
    EXPECT_FALSE(s->has_content("bob", faces[0].content_hash));
    EXPECT_FALSE(s->has_content("bob", ""));

    std::vector<face_record> scanned;
    ASSERT_TRUE(s->scan([&](const face_record &f) {
                     scanned.push_back(f);
                     return status::ok();
                 }).is_ok());
    ASSERT_EQ(scanned.size(), faces.size());
    for (size_t i = 0; i < faces.size(); ++i) {
        expect_same_face(scanned[i], faces[i]);
    }

    std::vector<uint64_t> all_ids;
    std::vector<float> vectors;
    std::vector<std::string> persons;
    ASSERT_TRUE(s->load_all(all_ids, vectors, persons).is_ok());
    EXPECT_EQ(all_ids, ids);
    EXPECT_EQ(persons, (std::vector<std::string>{"alice", "alice", "bob"}));
    ASSERT_EQ(vectors.size(), 3 * kDim);
    for (size_t i = 0; i < faces.size(); ++i) {
        EXPECT_TRUE(std::equal(faces[i].embedding.begin(),
                               faces[i].embedding.end(),
                               vectors.begin() + i * kDim));
    }
    using person_list = std::vector<std::pair<std::string, uint64_t>>;
    EXPECT_EQ(s->list_persons("", 10), (person_list{{"alice", 2}, {"bob", 1}}));
}

TEST(StoreTest, ScanWithoutEmbeddingAndEarlyStop) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    put_ok(*s, {make_face("a", 1), make_face("b", 2), make_face("c", 3)});

    size_t seen = 0;
    status st = s->scan(
        [&](const face_record &f) {
            EXPECT_TRUE(f.embedding.empty());
            return ++seen == 2 ? not_found("stop here") : status::ok();
        },
        /*with_embedding=*/false);
    EXPECT_EQ(st.code(), error_code::not_found);
    EXPECT_EQ(st.message(), "stop here");
    EXPECT_EQ(seen, 2u);
}

TEST(StoreTest, ZeroEnrollmentTimeBecomesNow) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    face_record f = make_face("a", 1);
    f.enrolled_at_us = 0;
    int64_t before = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    auto ids = put_ok(*s, {f});
    ASSERT_EQ(ids.size(), 1u);
    auto got = s->get_face(ids[0]);
    ASSERT_TRUE(got.has_value());
    EXPECT_GE(got->enrolled_at_us, before);
}

TEST(StoreTest, PutBatchWritesBackIdsAndTimes) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    std::vector<face_record> faces = {make_face("a", 1), make_face("b", 2)};
    faces[1].enrolled_at_us = 0;
    auto r = s->put_batch(faces);
    ASSERT_TRUE(r.is_ok());
    EXPECT_EQ(faces[0].id, r.value()[0]);
    EXPECT_EQ(faces[1].id, r.value()[1]);
    EXPECT_NE(faces[1].enrolled_at_us, 0);
    auto empty = s->put_batch({});
    ASSERT_TRUE(empty.is_ok());
    EXPECT_TRUE(empty.value().empty());
}

TEST(StoreTest, IdsAreUniqueAndNeverReusedAfterRemovalAndReopen) {
    testing::temp_dir dir;
    std::vector<uint64_t> first;
    {
        auto s = open_ok(dir.str("db"));
        ASSERT_NE(s, nullptr);
        first = put_ok(
            *s, {make_face("a", 1), make_face("a", 2), make_face("b", 3)});
        auto second = put_ok(*s, {make_face("c", 4)});
        first.insert(first.end(), second.begin(), second.end());
        ASSERT_EQ(first.size(), 4u);
        std::vector<uint64_t> sorted = first;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());

        // Remove the newest faces, so a reused counter would hand them out.
        ASSERT_TRUE(s->remove_face(first[3]).is_ok());
        ASSERT_TRUE(s->remove_person("b").is_ok());
    }
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    auto again = put_ok(*s, {make_face("d", 5)});
    ASSERT_EQ(again.size(), 1u);
    EXPECT_GT(again[0], *std::max_element(first.begin(), first.end()));
}

TEST(StoreTest, ReopenAfterKillKeepsAcknowledgedBatches) {
    testing::temp_dir dir;
    std::string path = dir.str("db");
    open_ok(path).reset();  // create

    child c = spawn_child("StoreChild.WriteUntilKilled", path);
    uint64_t acknowledged = 0;
    size_t batches = 0;
    while (batches < kKillAfterBatches) {
        auto line = read_line(c.report_fd);
        ASSERT_TRUE(line.has_value()) << "child stopped before being killed";
        acknowledged = std::stoull(*line);
        ++batches;
    }
    kill(c.pid, SIGKILL);
    int st = wait_child(c.pid);
    close(c.report_fd);
    ASSERT_TRUE(WIFSIGNALED(st));

    // Every acknowledged batch is there, and no part of a torn one.
    auto s = open_ok(path, open_options());
    ASSERT_NE(s, nullptr);
    uint64_t n = s->face_count();
    EXPECT_GE(n, acknowledged);
    EXPECT_EQ(n % kKillBatchFaces, 0u);
    uint64_t scanned = 0;
    ASSERT_TRUE(s->scan([&](const face_record &f) {
                     EXPECT_EQ(f.id, ++scanned);
                     return status::ok();
                 }).is_ok());
    EXPECT_EQ(scanned, n);
    uint64_t listed = 0;
    for (const auto &[person, count] : s->list_persons("", 10)) {
        listed += count;
    }
    EXPECT_EQ(listed, n);
    EXPECT_EQ(s->person_count(), 3u);
    auto next = put_ok(*s, {make_face("ana", 1)});
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0], n + 1);
}

// ---- metadata checks ----------------------------------------------------

TEST(StoreTest, OpenFailsOnDimMismatch) {
    testing::temp_dir dir;
    open_ok(dir.str("db")).reset();
    open_options o;
    o.meta.dim = 512;
    auto r = store::open(dir.str("db"), o);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::mismatch);
    EXPECT_EQ(r.error().message(),
              "database " + dir.str("db") + " has dim 16, expected 512");
}

TEST(StoreTest, OpenFailsOnFingerprintMismatch) {
    testing::temp_dir dir;
    open_ok(dir.str("db")).reset();
    open_options o;
    o.meta.dim = kDim;
    o.meta.model_fingerprint = "other-model";
    auto r = store::open(dir.str("db"), o);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::mismatch);
    EXPECT_EQ(r.error().message(),
              "database " + dir.str("db") +
                  " was made with model fingerprint 'test-model-v1', "
                  "expected 'other-model'");
}

TEST(StoreTest, OpenFailsOnNewerSchema) {
    testing::temp_dir dir;
    open_ok(dir.str("db")).reset();
    damage(dir.str("db"), internal::kMetaFamily, internal::kMetaSchemaVersion,
           internal::encode_u32(kSchemaVersion + 1));
    auto r = store::open(dir.str("db"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::mismatch);
    EXPECT_EQ(r.error().message(),
              "database " + dir.str("db") + " has schema version " +
                  std::to_string(kSchemaVersion + 1) + ", expected at most " +
                  std::to_string(kSchemaVersion) +
                  " (it was written by a newer facevec)");
}

TEST(CodecTest, PersonEntriesRoundTripAndCorruptValuesAreRejected) {
    std::string value;
    internal::append_person_entry(value, 0, 40, "abc");
    internal::append_person_entry(value, 40, 41, "");
    internal::append_person_entry(value, 41, 300, "h");
    std::vector<internal::person_entry> entries;
    ASSERT_EQ(internal::decode_person_entries(value, entries), nullptr);
    ASSERT_EQ(entries.size(), 3u);
    EXPECT_EQ(entries[0].id, 40u);
    EXPECT_TRUE(entries[0].hashed);
    EXPECT_EQ(entries[0].digest, internal::content_digest("abc"));
    EXPECT_EQ(entries[1].id, 41u);
    EXPECT_FALSE(entries[1].hashed);
    EXPECT_EQ(entries[2].id, 300u);
    EXPECT_EQ(entries[2].digest, internal::content_digest("h"));
    EXPECT_NE(internal::content_digest("abc"), internal::content_digest("abd"));

    EXPECT_STREQ(internal::decode_person_entries("", entries), "no entries");
    // Cut inside the first entry's digest.
    EXPECT_STREQ(internal::decode_person_entries(value.substr(0, 5), entries),
                 "truncated entry");
    // A varint that never ends.
    EXPECT_STREQ(internal::decode_person_entries("\xff", entries),
                 "truncated entry");
    // A second entry with the same id.
    std::string repeated;
    internal::append_person_entry(repeated, 0, 7, "");
    repeated.push_back('\0');
    EXPECT_STREQ(internal::decode_person_entries(repeated, entries),
                 "ids not increasing");
    // Ids past 2^64 - 1 must not wrap: four deltas of 2^62.
    std::string far;
    for (int i = 0; i < 4; ++i)
        internal::append_person_entry(far, 0, uint64_t{1} << 62, "");
    EXPECT_STREQ(internal::decode_person_entries(far, entries),
                 "ids not increasing");
}

TEST(StoreTest, OpenFailsOnOlderSchemaNamingBothVersions) {
    testing::temp_dir dir;
    open_ok(dir.str("db")).reset();
    damage(dir.str("db"), internal::kMetaFamily, internal::kMetaSchemaVersion,
           internal::encode_u32(kSchemaVersion - 1));
    auto r = store::open(dir.str("db"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::mismatch);
    EXPECT_THAT(r.error().message(),
                ::testing::HasSubstr(
                    "has schema version " + std::to_string(kSchemaVersion - 1) +
                    ", expected " + std::to_string(kSchemaVersion) +
                    " (it was written by an older facevec"));
}

TEST(StoreTest, CreateRejectsBadMeta) {
    testing::temp_dir dir;
    auto r = store::open(dir.str("db"), create_options(0));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("dim 0 is not in 1..65536"));
    EXPECT_FALSE(fs::exists(dir.str("db")));

    open_options o = create_options();
    o.meta.threshold = std::numeric_limits<float>::quiet_NaN();
    r = store::open(dir.str("db"), o);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("is not a finite value >= 0"));
}

TEST(StoreTest, SetThresholdRejectsNegativeAndNaN) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    for (float bad : {-1.0f, std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity()}) {
        status st = s->set_threshold(bad);
        EXPECT_EQ(st.code(), error_code::invalid_argument);
        EXPECT_THAT(st.message(), HasSubstr("is not a finite value >= 0"));
    }
    EXPECT_EQ(s->meta().threshold, kThreshold);
}

// ---- locking ------------------------------------------------------------

TEST(StoreTest, OpenFailsInUseFromAnotherProcess) {
    testing::temp_dir dir;
    std::string path = dir.str("db");
    auto held = open_ok(path);
    ASSERT_NE(held, nullptr);

    child c = spawn_child("StoreChild.OpenAndReport", path);
    auto code = read_line(c.report_fd);
    auto message = read_line(c.report_fd);
    close(c.report_fd);
    int st = wait_child(c.pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    EXPECT_EQ(code, "in_use");
    EXPECT_EQ(message,
              "database in use: " + path + " is open in another process");

    // Once closed here, the other process can open it.
    held.reset();
    c = spawn_child("StoreChild.OpenAndReport", path);
    code = read_line(c.report_fd);
    close(c.report_fd);
    wait_child(c.pid);
    EXPECT_EQ(code, "ok");
}

TEST(StoreTest, SecondOpenInSameProcessFailsInUse) {
    testing::temp_dir dir;
    auto held = open_ok(dir.str("db"));
    ASSERT_NE(held, nullptr);
    auto r = store::open(dir.str("db"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::in_use);
    EXPECT_EQ(r.error().message(), "database in use: " + dir.str("db") +
                                       " is already open in this process");
    held.reset();
    EXPECT_NE(open_ok(dir.str("db"), open_options()), nullptr);
}

// ---- missing and corrupt databases -------------------------------------

TEST(StoreTest, OpenMissingDirFailsNotFound) {
    testing::temp_dir dir;
    auto r = store::open(dir.str("nope"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::not_found);
    EXPECT_EQ(r.error().message(),
              "database not found: " + dir.str("nope") + " does not exist");
    EXPECT_FALSE(fs::exists(dir.str("nope")));

    fs::create_directory(dir.str("empty"));
    r = store::open(dir.str("empty"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::not_found);
    EXPECT_EQ(r.error().message(), "database not found: " + dir.str("empty") +
                                       " is an empty directory");
}

TEST(StoreTest, CreateInsideMissingParentsAndEmptyDir) {
    testing::temp_dir dir;
    EXPECT_NE(open_ok(dir.str("a/b/db")), nullptr);
    fs::create_directory(dir.str("empty"));
    EXPECT_NE(open_ok(dir.str("empty")), nullptr);
    EXPECT_NE(open_ok(dir.str("empty") + "/", open_options()), nullptr);
}

TEST(StoreTest, DirWithOtherFilesIsNotADatabase) {
    testing::temp_dir dir;
    fs::create_directory(dir.str("photos"));
    std::ofstream(dir.str("photos/notes.txt")) << "not a database";
    for (bool create : {false, true}) {
        open_options o = create_options();
        o.create_if_missing = create;
        auto r = store::open(dir.str("photos"), o);
        ASSERT_FALSE(r.is_ok());
        EXPECT_EQ(r.error().code(), error_code::corruption);
        EXPECT_EQ(r.error().message(),
                  "not a facevec database: " + dir.str("photos") +
                      " has no RocksDB CURRENT file");
    }
    EXPECT_TRUE(fs::exists(dir.str("photos/notes.txt")));

    std::ofstream(dir.str("file")) << "x";
    auto r = store::open(dir.str("file"), create_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::corruption);
    EXPECT_EQ(r.error().message(), "not a facevec database: " +
                                       dir.str("file") + " is not a directory");
}

TEST(StoreTest, PlainRocksDbIsNotAFacevecDatabase) {
    testing::temp_dir dir;
    {
        rocksdb::Options o;
        o.create_if_missing = true;
        rocksdb::DB *db = nullptr;
        ASSERT_TRUE(rocksdb::DB::Open(o, dir.str("plain"), &db).ok());
        delete db;
    }
    auto r = store::open(dir.str("plain"), create_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::corruption);
    EXPECT_EQ(r.error().message(),
              "not a facevec database: " + dir.str("plain") +
                  " has no column family 'meta'");
}

TEST(StoreTest, GarbageManifestOrCurrentIsCorruption) {
    for (std::string victim : {"MANIFEST", "CURRENT"}) {
        SCOPED_TRACE(victim);
        testing::temp_dir dir;
        put_ok(*open_ok(dir.str("db")), {make_face("a", 1)});
        for (const auto &e : fs::directory_iterator(dir.str("db"))) {
            if (e.path().filename().string().starts_with(victim)) {
                std::ofstream(e.path(), std::ios::trunc)
                    << "garbage\x01\x02 not rocksdb";
            }
        }
        auto r = store::open(dir.str("db"), open_options());
        ASSERT_FALSE(r.is_ok());
        EXPECT_EQ(r.error().code(), error_code::corruption);
        EXPECT_THAT(r.error().message(),
                    HasSubstr("cannot read database " + dir.str("db") + ": "));
    }
}

TEST(StoreTest, MissingMetaRecordIsCorruption) {
    testing::temp_dir dir;
    open_ok(dir.str("db")).reset();
    damage(dir.str("db"), internal::kMetaFamily, internal::kMetaDim,
           std::nullopt);
    auto r = store::open(dir.str("db"), open_options());
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::corruption);
    EXPECT_EQ(r.error().message(),
              dir.str("db") + ": meta record 'dim' is missing");
}

// ---- put_batch input checks ---------------------------------------------

TEST(StoreTest, PutBatchRejectsWrongDimAndBadLabelWritingNothing) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    std::vector<face_record> faces = {make_face("a", 1), make_face("b", 2)};
    faces[1].embedding.resize(3);
    auto r = s->put_batch(faces);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_EQ(r.error().message(),
              "face 1 of the batch: embedding has 3 values, expected 16");

    faces = {make_face("", 1)};
    r = s->put_batch(faces);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_EQ(r.error().message(), "face 0 of the batch: label is empty");
    EXPECT_EQ(s->face_count(), 0u);
    EXPECT_TRUE(s->list_persons("", 10).empty());
}

// ---- removal and purge --------------------------------------------------

TEST(StoreTest, RemovePersonDeletesEveryRecord) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    auto ids = put_ok(*s, {make_face("alice", 1), make_face("bob", 2),
                           make_face("alice", 3)});
    auto removed = s->remove_person("alice");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value(), (std::vector<uint64_t>{ids[0], ids[2]}));
    EXPECT_FALSE(s->get_face(ids[0]).has_value());
    EXPECT_FALSE(s->get_face(ids[2]).has_value());
    EXPECT_TRUE(s->get_face(ids[1]).has_value());
    EXPECT_FALSE(s->has_content("alice", make_face("alice", 1).content_hash));
    EXPECT_EQ(s->face_count(), 1u);
    EXPECT_EQ(s->person_count(), 1u);
    using person_list = std::vector<std::pair<std::string, uint64_t>>;
    EXPECT_EQ(s->list_persons("", 10), (person_list{{"bob", 1}}));

    std::vector<uint64_t> all;
    std::vector<float> vectors;
    std::vector<std::string> persons;
    ASSERT_TRUE(s->load_all(all, vectors, persons).is_ok());
    EXPECT_EQ(all, (std::vector<uint64_t>{ids[1]}));
    EXPECT_EQ(vectors.size(), kDim);

    auto again = s->remove_person("alice");
    ASSERT_FALSE(again.is_ok());
    EXPECT_EQ(again.error().code(), error_code::not_found);
    EXPECT_EQ(again.error().message(), "person not found: 'alice'");

    // A person whose label is a prefix of another keeps its faces.
    put_ok(*s, {make_face("bo", 4)});
    ASSERT_TRUE(s->remove_person("bo").is_ok());
    EXPECT_EQ(s->list_persons("", 10), (person_list{{"bob", 1}}));
}

TEST(StoreTest, RemoveFaceUpdatesCountsAndPersons) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    auto ids = put_ok(*s, {make_face("alice", 1), make_face("alice", 2)});
    ASSERT_TRUE(s->remove_face(ids[0]).is_ok());
    EXPECT_FALSE(s->get_face(ids[0]).has_value());
    using person_list = std::vector<std::pair<std::string, uint64_t>>;
    EXPECT_EQ(s->list_persons("", 10), (person_list{{"alice", 1}}));
    EXPECT_EQ(s->person_count(), 1u);
    EXPECT_FALSE(s->has_content("alice", make_face("alice", 1).content_hash));
    EXPECT_TRUE(s->has_content("alice", make_face("alice", 2).content_hash));

    ASSERT_TRUE(s->remove_face(ids[1]).is_ok());
    EXPECT_TRUE(s->list_persons("", 10).empty());
    EXPECT_EQ(s->person_count(), 0u);
    EXPECT_EQ(s->face_count(), 0u);

    status st = s->remove_face(ids[1]);
    EXPECT_EQ(st.code(), error_code::not_found);
    EXPECT_EQ(st.message(), "face " + std::to_string(ids[1]) + " not found");
}

TEST(StoreTest, RemovingOneOfTwinFacesKeepsTheContentHash) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    face_record a = make_face("alice", 1);
    face_record b = make_face("alice", 2);
    b.content_hash = a.content_hash;
    auto ids = put_ok(*s, {a, b});
    ASSERT_TRUE(s->remove_face(ids[1]).is_ok());  // the hash's owner
    EXPECT_TRUE(s->has_content("alice", a.content_hash));
    ASSERT_TRUE(s->remove_face(ids[0]).is_ok());
    EXPECT_FALSE(s->has_content("alice", a.content_hash));
}

TEST(StoreTest, ContentHashesAreMatchedWholeAndInBatches) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    face_record a = make_face("alice", 1);
    a.content_hash = "abc";
    face_record b = make_face("alicex", 2);
    b.content_hash = "abd";
    put_ok(*s, {a, b});
    EXPECT_TRUE(s->has_content("alice", "abc"));
    EXPECT_FALSE(s->has_content("alice", "ab"));
    EXPECT_FALSE(s->has_content("alice", "abcd"));
    EXPECT_FALSE(s->has_content("alice", "abd"));
    std::vector<std::pair<std::string, std::string>> keys = {
        {"alicex", "abd"}, {"alice", "ab"}, {"alice", "abc"}, {"bob", "abc"}};
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{true, false, true, false}));
}

TEST(StoreTest, PersonsRecordsSpanBatchesAndSurviveRemovals) {
    testing::temp_dir dir;
    std::vector<uint64_t> first;
    std::vector<uint64_t> second;
    {
        auto s = open_ok(dir.str("db"));
        ASSERT_NE(s, nullptr);
        first = put_ok(*s, {make_face("alice", 1), make_face("bob", 2),
                            make_face("alice", 3), make_face("alice", 4)});
        second = put_ok(*s, {make_face("alice", 5)});
        ASSERT_EQ(first.size(), 4u);
        ASSERT_EQ(second.size(), 1u);
        // A face in the middle of its batch's record, then the first.
        ASSERT_TRUE(s->remove_face(first[2]).is_ok());
        ASSERT_TRUE(s->remove_face(first[0]).is_ok());
    }
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    std::vector<std::pair<std::string, std::string>> keys;
    for (uint32_t seed : {1, 3, 4, 5})
        keys.emplace_back("alice", make_face("alice", seed).content_hash);
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{false, false, true, true}));
    auto removed = s->remove_person("alice");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value(), (std::vector<uint64_t>{first[3], second[0]}));
    EXPECT_EQ(s->has_contents(keys).value(), std::vector<bool>(4, false));
    using person_list = std::vector<std::pair<std::string, uint64_t>>;
    EXPECT_EQ(s->list_persons("", 10), (person_list{{"bob", 1}}));
    EXPECT_TRUE(s->has_content("bob", make_face("bob", 2).content_hash));
}

// A person with thousands of faces has their digests cached after the
// first lookup; later batches, removals and lookups keep the answers right.
TEST(StoreTest, ContentLookupsStayRightForAPersonWithManyFaces) {
    constexpr uint32_t kBatches = 5;
    constexpr uint32_t kPerBatch = 1000;
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    // A second big label shares every batch, so both are cached.
    auto batch_of = [&](uint32_t b) {
        std::vector<face_record> faces;
        for (uint32_t i = 0; i < kPerBatch; ++i) {
            faces.push_back(make_face("crowd", b * kPerBatch + i));
            faces.push_back(make_face("throng", b * kPerBatch + i));
        }
        return faces;
    };
    auto hash_of = [](uint32_t seed) {
        return make_face("crowd", seed).content_hash;
    };
    std::vector<uint64_t> ids;
    for (uint32_t b = 0; b < kBatches; ++b) {
        auto got = put_ok(*s, batch_of(b));
        ids.insert(ids.end(), got.begin(), got.end());
    }
    const uint32_t total = kBatches * kPerBatch;
    std::vector<std::pair<std::string, std::string>> keys = {
        {"crowd", hash_of(0)},
        {"crowd", hash_of(total - 1)},
        {"crowd", hash_of(total)},
        {"crowd", hash_of(total + 1)}};
    std::vector<std::pair<std::string, std::string>> throng = {
        {"throng", make_face("throng", 7).content_hash},
        {"throng", make_face("throng", total).content_hash}};
    for (int round = 0; round < 2; ++round) {
        EXPECT_EQ(s->has_contents(keys).value(),
                  (std::vector<bool>{true, true, false, false}));
        EXPECT_EQ(s->has_contents(throng).value(),
                  (std::vector<bool>{true, false}));
    }
    // A batch written after the lookup is seen by the next one.
    put_ok(*s, {make_face("crowd", total), make_face("other", total + 1)});
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{true, true, true, false}));
    // So is a removal.
    ASSERT_TRUE(s->remove_face(ids[0]).is_ok());
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{false, true, true, false}));
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{false, true, true, false}));
    ASSERT_TRUE(s->remove_person("crowd").is_ok());
    EXPECT_EQ(s->has_contents(keys).value(), std::vector<bool>(4, false));
    EXPECT_TRUE(s->has_content("other", hash_of(total + 1)));
}

// The persons records of `person`, decoded: last id -> entry ids.
std::map<uint64_t, std::vector<uint64_t>> persons_records(
    const std::string &path, const std::string &person) {
    raw_db raw(path);
    std::map<uint64_t, std::vector<uint64_t>> out;
    std::string prefix = internal::person_prefix(person);
    std::unique_ptr<rocksdb::Iterator> it(raw.db->NewIterator(
        rocksdb::ReadOptions(), raw.family(internal::kPersonsFamily)));
    std::vector<internal::person_entry> entries;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
         it->Next()) {
        auto key_id =
            internal::id_of_person_key(it->key().ToStringView(), prefix.size());
        EXPECT_TRUE(key_id.has_value());
        EXPECT_EQ(internal::decode_person_entries(it->value().ToStringView(),
                                                  entries),
                  nullptr);
        for (const auto &e : entries)
            out[key_id.value_or(0)].push_back(e.id);
    }
    return out;
}

TEST(StoreTest, BigBatchesSplitIntoRecordsAndRemovalRewritesOnlyOne) {
    testing::temp_dir dir;
    std::vector<uint64_t> ids;
    {
        auto s = open_ok(dir.str("db"));
        ASSERT_NE(s, nullptr);
        std::vector<face_record> faces;
        for (uint32_t i = 0; i < 1100; ++i)
            faces.push_back(make_face("crowd", i));
        ids = put_ok(*s, faces);
        ASSERT_EQ(ids.size(), 1100u);
    }
    auto records = persons_records(dir.str("db"), "crowd");
    // Runs of 512, 512 and 76 faces, keyed by their last id.
    ASSERT_EQ(records.size(), 3u);
    EXPECT_EQ(records.begin()->first, ids[511]);
    EXPECT_EQ(records.begin()->second.size(), 512u);
    EXPECT_EQ(records.rbegin()->first, ids[1099]);
    EXPECT_EQ(records.rbegin()->second.size(), 76u);
    {
        auto s = open_ok(dir.str("db"), open_options());
        ASSERT_NE(s, nullptr);
        // The last face of a run, then a middle one, then the first.
        for (size_t i : {size_t{1023}, size_t{600}, size_t{512}})
            ASSERT_TRUE(s->remove_face(ids[i]).is_ok()) << i;
    }
    records = persons_records(dir.str("db"), "crowd");
    ASSERT_EQ(records.size(), 3u);
    const std::vector<uint64_t> &middle = records[ids[1023]];
    EXPECT_EQ(middle.size(), 509u);
    EXPECT_EQ(middle.front(), ids[513]);
    EXPECT_EQ(middle.back(), ids[1022]);
    for (size_t i : {size_t{1023}, size_t{600}, size_t{512}}) {
        EXPECT_EQ(std::count(middle.begin(), middle.end(), ids[i]), 0) << i;
    }
    EXPECT_EQ(records[ids[511]].size(), 512u);

    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    const std::vector<std::pair<std::string, std::string>> keys = {
        {"crowd", make_face("crowd", 600).content_hash},
        {"crowd", make_face("crowd", 601).content_hash},
        {"crowd", make_face("crowd", 601).content_hash},
        {"crowd", make_face("crowd", 1023).content_hash}};
    EXPECT_EQ(s->has_contents(keys).value(),
              (std::vector<bool>{false, true, true, false}));
    auto removed = s->remove_person("crowd");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value().size(), 1097u);
    s.reset();
    EXPECT_TRUE(persons_records(dir.str("db"), "crowd").empty());
}

// A damaged persons index must neither block removing the person nor let
// an enroll add duplicates unnoticed.
TEST(StoreTest, DamagedPersonsRecordIsReportedAndThePersonCanBeRemoved) {
    testing::temp_dir dir;
    auto ids = create_with(
        dir.str("db"),
        {{make_face("ann", 1), make_face("ann", 2), make_face("bob", 3)},
         {make_face("ann", 4)}});
    const std::vector<uint64_t> &first = ids.at(0);
    const std::vector<uint64_t> &second = ids.at(1);
    damage(dir.str("db"), internal::kPersonsFamily,
           internal::person_key("ann", first.at(1)), "\xff");
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    std::vector<std::pair<std::string, std::string>> keys = {
        {"ann", make_face("ann", 1).content_hash}};
    auto found = s->has_contents(keys);
    ASSERT_FALSE(found.is_ok());
    EXPECT_EQ(found.error().code(), error_code::corruption);
    EXPECT_EQ(found.error().message(),
              dir.str("db") + ": bad persons record of 'ann' (last id " +
                  std::to_string(first[1]) + "): truncated entry");
    // Other persons are unaffected.
    keys = {{"bob", make_face("bob", 3).content_hash}};
    EXPECT_EQ(s->has_contents(keys).value(), std::vector<bool>{true});

    // A face of the damaged record can still be removed, and so can the
    // person: their faces are found by a scan of the faces records.
    ASSERT_TRUE(s->remove_face(first[0]).is_ok());
    auto removed = s->remove_person("ann");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value(), (std::vector<uint64_t>{first[1], second[0]}));
    EXPECT_FALSE(s->get_face(first[1]).has_value());
    EXPECT_FALSE(s->get_face(second[0]).has_value());
    EXPECT_EQ(s->face_count(), 1u);
    EXPECT_EQ(s->person_count(), 1u);
    s.reset();
    EXPECT_TRUE(persons_records(dir.str("db"), "ann").empty());
}

TEST(StoreTest, LostPersonsRecordStillLetsThePersonBeRemoved) {
    testing::temp_dir dir;
    auto ids = create_with(dir.str("db"),
                           {{make_face("ann", 1)}, {make_face("ann", 2)}});
    const std::vector<uint64_t> &first = ids.at(0);
    const std::vector<uint64_t> &second = ids.at(1);
    damage(dir.str("db"), internal::kPersonsFamily,
           internal::person_key("ann", first.at(0)), std::nullopt);
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    // The lost record's face would look absent: a lookup refuses instead.
    std::vector<std::pair<std::string, std::string>> keys = {
        {"ann", make_face("ann", 1).content_hash}};
    auto found = s->has_contents(keys);
    ASSERT_FALSE(found.is_ok());
    EXPECT_EQ(found.error().code(), error_code::corruption);
    EXPECT_EQ(found.error().message(),
              dir.str("db") +
                  ": the persons index lists 1 faces of 'ann', its count "
                  "says 2 (remove the person and enroll them again)");
    auto removed = s->remove_person("ann");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value(), (std::vector<uint64_t>{first[0], second[0]}));
    EXPECT_EQ(s->face_count(), 0u);
    EXPECT_EQ(s->person_count(), 0u);
    EXPECT_TRUE(s->list_persons("", 10).empty());
}

TEST(StoreTest, LostFaceCountNeverWrapsThePersonTotal) {
    testing::temp_dir dir;
    const std::vector<uint64_t> ids =
        create_with(dir.str("db"), {{make_face("ann", 1), make_face("ann", 2),
                                     make_face("ann", 3)}})
            .at(0);
    damage(dir.str("db"), internal::kPersonCountsFamily, "ann", std::nullopt);
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(s->remove_face(ids[0]).is_ok());
    ASSERT_TRUE(s->remove_face(ids[1]).is_ok());
    EXPECT_EQ(s->person_count(), 1u);
    EXPECT_EQ(s->face_count(), 1u);
    auto removed = s->remove_person("ann");
    ASSERT_TRUE(removed.is_ok()) << removed.error().to_string();
    EXPECT_EQ(removed.value(), std::vector<uint64_t>{ids[2]});
    EXPECT_EQ(s->person_count(), 0u);
    EXPECT_EQ(s->face_count(), 0u);
}

// A persons record keeps a digest of each hash: a digest that matches is
// confirmed against the full hash in the face record.
TEST(StoreTest, ContentDigestMatchesAreConfirmedByTheFullHash) {
    testing::temp_dir dir;
    face_record f = make_face("alice", 1);
    f.content_hash = "held";
    const uint64_t id = create_with(dir.str("db"), {{f}}).at(0).at(0);
    // The record now claims the digest of another hash.
    std::string value;
    internal::append_person_entry(value, 0, id, "claimed");
    damage(dir.str("db"), internal::kPersonsFamily,
           internal::person_key("alice", id), value);
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(s->has_content("alice", "claimed"));
    EXPECT_FALSE(s->has_content("alice", "held"));
    EXPECT_TRUE(s->remove_face(id).is_ok());
    EXPECT_EQ(s->face_count(), 0u);
}

TEST(StoreTest, LoadFacesGivesEveryFaceInIdOrder) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    std::vector<face_record> faces = {make_face("b", 1), make_face("a", 2),
                                      make_face("b", 3)};
    auto ids = put_ok(*s, faces);
    ASSERT_TRUE(s->remove_face(ids[1]).is_ok());
    std::vector<uint64_t> seen;
    status st = s->load_faces(
        [&](uint64_t id, std::string_view person, std::string_view embedding) {
            size_t i = seen.size() == 0 ? 0 : 2;
            seen.push_back(id);
            EXPECT_EQ(person, faces[i].person);
            ASSERT_EQ(embedding.size(), kDim * sizeof(float));
            EXPECT_EQ(std::memcmp(embedding.data(), faces[i].embedding.data(),
                                  embedding.size()),
                      0);
        });
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_EQ(seen, (std::vector<uint64_t>{ids[0], ids[2]}));
}

TEST(StoreTest, PurgeRemovesDeletedEmbeddingBytesFromEveryFile) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    face_record flushed = make_face("flushed", kSeed);
    face_record fresh = make_face("fresh", kSeed + 1);
    face_record kept = make_face("kept", kSeed + 2);

    // One removed face already in an SST, one still in the WAL only.
    put_ok(*s, {flushed, kept});
    ASSERT_TRUE(s->purge().is_ok());
    put_ok(*s, {fresh});
    ASSERT_TRUE(s->remove_person("flushed").is_ok());
    ASSERT_TRUE(s->remove_person("fresh").is_ok());
    EXPECT_TRUE(bytes_in_dir(dir.path(), flushed.embedding));
    EXPECT_TRUE(bytes_in_dir(dir.path(), fresh.embedding));

    status st = s->purge();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_FALSE(bytes_in_dir(dir.path(), flushed.embedding));
    EXPECT_FALSE(bytes_in_dir(dir.path(), fresh.embedding));
    EXPECT_TRUE(bytes_in_dir(dir.path(), kept.embedding));

    // Still absent, and the kept face intact, after reopening.
    s.reset();
    s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    EXPECT_FALSE(bytes_in_dir(dir.path(), flushed.embedding));
    EXPECT_EQ(s->face_count(), 1u);
    EXPECT_EQ(s->list_persons("", 10).front().first, "kept");
}

// ---- labels -------------------------------------------------------------

TEST(StoreTest, ListPersonsPagesInLabelOrder) {
    testing::temp_dir dir;
    auto s = open_ok(dir.str("db"));
    ASSERT_NE(s, nullptr);
    put_ok(*s, {make_face("d", 1), make_face("b", 2), make_face("a", 3),
                make_face("c", 4), make_face("b", 5)});
    using person_list = std::vector<std::pair<std::string, uint64_t>>;
    EXPECT_EQ(s->list_persons("", 2), (person_list{{"a", 1}, {"b", 2}}));
    EXPECT_EQ(s->list_persons("b", 2), (person_list{{"c", 1}, {"d", 1}}));
    EXPECT_EQ(s->list_persons("bb", 1), (person_list{{"c", 1}}));
    EXPECT_TRUE(s->list_persons("d", 2).empty());
    EXPECT_TRUE(s->list_persons("", 0).empty());
}

TEST(StoreTest, UnicodeLabelsRoundTrip) {
    std::vector<std::string> used = {
        "José Müller-Øster",  // accents
        "Анна Каренина",      // Cyrillic
        "王小明",             // CJK
        "山田 太郎",          // Japanese
        "Ana 😀🎉",             // emoji
    };
    std::string emoji_max;
    while (emoji_max.size() < kMaxLabelBytes)
        emoji_max += "😀";
    used.push_back(emoji_max);  // exactly kMaxLabelBytes bytes
    testing::temp_dir dir;
    std::vector<uint64_t> ids;
    {
        auto s = open_ok(dir.str("db"));
        ASSERT_NE(s, nullptr);
        std::vector<face_record> faces;
        for (size_t i = 0; i < used.size(); ++i) {
            ASSERT_TRUE(validate_label(used[i]).is_ok()) << used[i];
            faces.push_back(make_face(used[i], static_cast<uint32_t>(i)));
        }
        ids = put_ok(*s, faces);
    }
    auto s = open_ok(dir.str("db"), open_options());
    ASSERT_NE(s, nullptr);
    for (size_t i = 0; i < used.size(); ++i) {
        auto f = s->get_face(ids[i]);
        ASSERT_TRUE(f.has_value());
        EXPECT_EQ(f->person, used[i]);
        EXPECT_TRUE(s->has_content(used[i], "sha256:" + std::to_string(i)));
    }
    std::vector<std::string> sorted = used;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> listed;
    for (const auto &[person, n] : s->list_persons("", 100)) {
        listed.push_back(person);
        EXPECT_EQ(n, 1u);
    }
    EXPECT_EQ(listed, sorted);
    auto removed = s->remove_person("Анна Каренина");
    ASSERT_TRUE(removed.is_ok());
    EXPECT_EQ(removed.value(), (std::vector<uint64_t>{ids[1]}));
}

struct label_case {
    std::string label;
    std::string message;
};

TEST(ValidateLabelTest, AcceptsValidUtf8UpToTheLimit) {
    const std::vector<std::string> valid = {
        "a",
        std::string(kMaxLabelBytes, 'a'),
        "é",
        "\xef\xbf\xbd",      // U+FFFD
        "\xf4\x8f\xbf\xbf",  // U+10FFFF, the last code point
        "\xed\x9f\xbf",      // U+D7FF, just below the surrogates
        "\xee\x80\x80",      // U+E000, just above them
        "space and ~ punctuation!",
    };
    for (const std::string &l : valid) {
        status st = validate_label(l);
        EXPECT_TRUE(st.is_ok()) << l << ": " << st.to_string();
    }
}

TEST(ValidateLabelTest, RejectsEachBadLabelWithItsReason) {
    const std::string bad_utf8 = "label is not valid UTF-8: ";
    const std::vector<label_case> cases = {
        {"", "label is empty"},
        {std::string(kMaxLabelBytes + 1, 'a'),
         "label is 257 bytes, more than the limit of 256"},
        {std::string(kMaxLabelBytes - 1, 'a') + "é",
         "label is 257 bytes, more than the limit of 256"},
        {std::string("a\0b", 3), "label contains a NUL byte at byte 1"},
        {"a\nb", "label contains the control character 0x0A at byte 1"},
        {"cr\r", "label contains the control character 0x0D at byte 2"},
        {"tab\there", "label contains the control character 0x09 at byte 3"},
        {"x\x7f", "label contains the control character 0x7F at byte 1"},
        {"\xff", bad_utf8 + "invalid byte 0xFF at byte 0"},
        {"ok\xf8\x88\x80\x80\x80", bad_utf8 + "invalid byte 0xF8 at byte 2"},
        {"ab\x80", bad_utf8 + "unexpected continuation byte at byte 2"},
        {"\xc3", bad_utf8 + "truncated sequence at byte 0"},
        {"x\xe6\x97", bad_utf8 + "truncated sequence at byte 1"},
        {"\xe6\x97"
         "A",
         bad_utf8 + "truncated sequence at byte 0"},
        {"\xc0\x80", bad_utf8 + "overlong encoding at byte 0"},
        {"\xc1\xbf", bad_utf8 + "overlong encoding at byte 0"},
        {"\xe0\x80\xaf", bad_utf8 + "overlong encoding at byte 0"},
        {"\xf0\x80\x80\xaf", bad_utf8 + "overlong encoding at byte 0"},
        {"\xed\xa0\x80", bad_utf8 + "surrogate code point at byte 0"},
        {"a\xed\xbf\xbf", bad_utf8 + "surrogate code point at byte 1"},
        {"\xf4\x90\x80\x80", bad_utf8 + "code point above U+10FFFF at byte 0"},
        {"\xf5\x80\x80\x80", bad_utf8 + "code point above U+10FFFF at byte 0"},
    };
    for (const label_case &c : cases) {
        status st = validate_label(c.label);
        EXPECT_EQ(st.code(), error_code::invalid_argument) << c.message;
        EXPECT_EQ(st.message(), c.message);
    }
}

// ---- encodings ----------------------------------------------------------

TEST(CodecTest, FaceMetaRoundTripsAndRejectsTruncatedBytes) {
    face_record f = make_face("Zoë", 7);
    f.enrolled_at_us = -42;
    std::string bytes = internal::encode_face_meta(f, "another-model");
    face_record back;
    ASSERT_TRUE(internal::decode_face_meta(bytes, "another-model", back));
    EXPECT_EQ(back.person, f.person);
    EXPECT_EQ(back.source, f.source);
    EXPECT_EQ(back.model_fingerprint, f.model_fingerprint);
    EXPECT_EQ(back.enrolled_at_us, f.enrolled_at_us);
    EXPECT_EQ(back.content_hash, f.content_hash);
    for (size_t n = 0; n < bytes.size(); ++n) {
        EXPECT_FALSE(internal::decode_face_meta(bytes.substr(0, n), "", back))
            << n;
    }
    EXPECT_FALSE(internal::decode_face_meta(bytes + "x", "", back));
}

TEST(CodecTest, TheDatabasesFingerprintIsNotRepeatedPerFace) {
    face_record f = make_face("ann", 7);
    std::string own = internal::encode_face_meta(f, f.model_fingerprint);
    std::string other = internal::encode_face_meta(f, "another-model");
    EXPECT_EQ(own.size() + f.model_fingerprint.size(), other.size());
    face_record back;
    ASSERT_TRUE(internal::decode_face_meta(own, f.model_fingerprint, back));
    EXPECT_EQ(back.model_fingerprint, f.model_fingerprint);
    ASSERT_TRUE(internal::decode_face_meta(other, "another-model", back));
    EXPECT_EQ(back.model_fingerprint, f.model_fingerprint);

    // An empty fingerprint in a database that has one is kept empty.
    f.model_fingerprint.clear();
    std::string none = internal::encode_face_meta(f, kFingerprint);
    ASSERT_TRUE(internal::decode_face_meta(none, kFingerprint, back));
    EXPECT_EQ(back.model_fingerprint, "");
}

TEST(CodecTest, LowercaseHexHashesArePackedAndRoundTrip) {
    face_record f = make_face("ann", 7);
    f.content_hash.clear();
    const size_t empty = internal::encode_face_meta(f, kFingerprint).size();
    // Packed: an even number of lowercase hex digits, half the bytes.
    for (const char *hash : {"00ff7a", "0123456789abcdef"}) {
        f.content_hash = hash;
        std::string bytes = internal::encode_face_meta(f, kFingerprint);
        EXPECT_EQ(bytes.size(), empty + f.content_hash.size() / 2) << hash;
        face_record back;
        ASSERT_TRUE(internal::decode_face_meta(bytes, kFingerprint, back));
        EXPECT_EQ(back.content_hash, hash);
    }
    // Kept as they are: odd length, upper case, other characters.
    for (const char *hash : {"abc", "ABCD", "sha256:12", "0g"}) {
        f.content_hash = hash;
        std::string bytes = internal::encode_face_meta(f, kFingerprint);
        EXPECT_EQ(bytes.size(), empty + f.content_hash.size()) << hash;
        face_record back;
        ASSERT_TRUE(internal::decode_face_meta(bytes, kFingerprint, back));
        EXPECT_EQ(back.content_hash, hash);
    }
}

TEST(CodecTest, PersonKeysCarryTheFirstId) {
    std::string key = internal::person_key("ann", 42);
    std::string prefix = internal::person_prefix("ann");
    EXPECT_TRUE(key.starts_with(prefix));
    EXPECT_EQ(internal::id_of_person_key(key, prefix.size()), 42u);
    EXPECT_FALSE(internal::id_of_person_key(key + "x", prefix.size()));
    EXPECT_FALSE(internal::id_of_person_key(key.substr(0, key.size() - 1),
                                            prefix.size()));
    // Key order is label order, then id order.
    EXPECT_LT(internal::person_key("ann", 9), internal::person_key("ann", 10));
    EXPECT_LT(internal::person_key("ann", 99), internal::person_key("anna", 1));
}

TEST(CodecTest, FaceValueSplitsIntoMetadataAndEmbedding) {
    face_record f = make_face("Zoë", 7);
    std::string value;
    internal::encode_face_value(f, kFingerprint, value);
    std::string_view meta;
    std::string_view embedding;
    ASSERT_TRUE(internal::split_face_value(value, kDim, meta, embedding));
    EXPECT_EQ(meta, internal::encode_face_meta(f, kFingerprint));
    EXPECT_EQ(embedding.size(), kDim * sizeof(float));
    EXPECT_EQ(
        std::memcmp(embedding.data(), f.embedding.data(), embedding.size()), 0);
    std::string_view person;
    ASSERT_TRUE(internal::decode_face_person(meta, person));
    EXPECT_EQ(person, "Zoë");
    EXPECT_FALSE(
        internal::split_face_value(value.substr(0, 3), kDim, meta, embedding));
}

TEST(CodecTest, IdKeysSortInIdOrder) {
    EXPECT_LT(internal::id_key(255), internal::id_key(256));
    EXPECT_LT(internal::id_key(1), internal::id_key(uint64_t{1} << 40));
    EXPECT_EQ(internal::decode_u64(internal::id_key(123456789)), 123456789u);
}

}  // namespace
}  // namespace facevec::storage
