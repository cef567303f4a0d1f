// The face store against plain RocksDB, in the same run, batch by batch
// in turn so that both see the same load on a shared machine:
//   BM_Import: bulk import through store::put_batch (one faces record
//     with metadata and vector per face, one persons record and count
//     per person; batches of kBatchFaces) against plain RocksDB
//     WriteBatches of one record per face holding the same bytes (id ->
//     label, source, vector), same batch size, with the options the store
//     gives its faces (same WAL, memtable, compression). Target: >= 0.7x.
//   BM_OpenLoad: store::open + load_all of a database of --faces faces at
//     d=512 against plain DB::Open + an iterator over its faces column
//     family copying each vector into one float array (warm page cache).
//     Target: the store takes <= 1.5x the raw time.
// Each side is timed by the wall clock and by the CPU time of the
// calling thread (RocksDB's background flushes are not in it); on a
// shared machine the CPU ratio is the steadier one.
// Counters: items_per_second (store, wall), raw_items_per_second and
// store_vs_raw (rate ratio, wall), cpu_store_vs_raw (rate ratio, CPU).
// The summary at the end prints the medians and their ratios.
//
//   store_bench [--faces=N] [--import_faces=N] [--dir=PATH]
//               [benchmark flags]
// Defaults: --faces=100000, --import_faces=50000, --dir=the temp dir.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "storage/codec.h"
#include "storage/options.h"
#include "storage/store.h"

namespace {

namespace fs = std::filesystem;
using facevec::storage::face_record;
using facevec::storage::open_options;
using facevec::storage::store;

constexpr size_t kBatchFaces = 1000;
constexpr size_t kFacesPerPerson = 10;
constexpr uint32_t kLoadDim = 512;
constexpr uint32_t kSeed = 7;
// The model of the databases and of every face in them, as when the
// engine enrolls (the store keeps it once, not per face).
constexpr const char *kFingerprint = "facenet-512-v1";
constexpr size_t kDefaultFaces = 100000;
constexpr size_t kDefaultImportFaces = 50000;
constexpr int kRepetitions = 3;
// Bytes reserved per face in a raw batch beside its vector.
constexpr size_t kRawOverhead = 96;

size_t g_faces = kDefaultFaces;
size_t g_import_faces = kDefaultImportFaces;
fs::path g_dir = fs::temp_directory_path();

// Rates (items per second) of every repetition, by benchmark name.
std::map<std::string, std::vector<double>> g_rates;

fs::path scratch(const std::string &name) {
    return g_dir /
           ("facevec-store-bench-" + std::to_string(getpid()) + "-" + name);
}

// A content hash shaped like the one `facevec import` computes for a
// vector: 16 lowercase hex digits of a 64-bit digest.
std::string import_hash(uint64_t k) {
    constexpr uint64_t kMix = 0x9e3779b97f4a7c15ULL;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(k * kMix));
    return hex;
}

// Faces of kFacesPerPerson each, with realistic metadata sizes.
std::vector<face_record> make_batch(size_t first, size_t n, uint32_t dim,
                                    std::mt19937 &rng) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<face_record> batch(n);
    for (size_t i = 0; i < n; ++i) {
        face_record &f = batch[i];
        size_t k = first + i;
        f.person = "Person_" + std::to_string(k / kFacesPerPerson);
        f.embedding.resize(dim);
        for (float &x : f.embedding)
            x = u(rng);
        f.source = "/data/lfw/" + f.person + "/" + f.person + "_" +
                   std::to_string(k % kFacesPerPerson) + ".jpg";
        f.model_fingerprint = kFingerprint;
        f.content_hash = import_hash(k);
    }
    return batch;
}

// Wall-clock and calling-thread CPU seconds, added up over many spans.
struct times {
    double wall = 0;
    double cpu = 0;
};

double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) +
           1e-9 * static_cast<double>(t.tv_nsec);
}

// Runs fn and adds its wall and thread CPU time to `into`.
template <typename Fn>
auto timed(times &into, Fn &&fn) {
    auto wall = std::chrono::steady_clock::now();
    double cpu = thread_cpu_seconds();
    auto result = fn();
    into.cpu += thread_cpu_seconds() - cpu;
    into.wall +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall)
            .count();
    return result;
}

// Sets the store's rate, the baseline's and their ratios as counters, and
// keeps them for the summary.
void record(benchmark::State &state, const std::string &name, size_t items,
            const times &store_time, const times &raw_time) {
    auto n = static_cast<double>(items);
    g_rates[name + "/store"].push_back(n / store_time.wall);
    g_rates[name + "/raw"].push_back(n / raw_time.wall);
    g_rates[name + "/cpu_store"].push_back(n / store_time.cpu);
    g_rates[name + "/cpu_raw"].push_back(n / raw_time.cpu);
    state.SetIterationTime(store_time.wall);
    state.SetItemsProcessed(static_cast<int64_t>(items));
    state.counters["raw_items_per_second"] = n / raw_time.wall;
    state.counters["store_vs_raw"] = raw_time.wall / store_time.wall;
    state.counters["cpu_store_vs_raw"] = raw_time.cpu / store_time.cpu;
}

// A plain RocksDB database with only the default column family.
struct raw_db {
    rocksdb::DB *db = nullptr;
    ~raw_db() { delete db; }
};

// The plain WriteBatch of the baseline: per face one record, id ->
// label, source and vector, the bytes the store must keep at least.
void put_raw(rocksdb::WriteBatch &wb, const std::vector<face_record> &b,
             size_t first_id, size_t bytes) {
    std::string value;
    for (size_t i = 0; i < b.size(); ++i) {
        value.assign(b[i].person);
        value.append(b[i].source);
        value.append(reinterpret_cast<const char *>(b[i].embedding.data()),
                     bytes);
        wb.Put(facevec::storage::internal::id_key(first_id + i), value);
    }
}

// Imports the same faces through store::put_batch and, batch by batch in
// turn, as plain WriteBatches into a plain database, so both sides see
// the same load on the machine.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_Import(benchmark::State &state) {
    auto dim = static_cast<uint32_t>(state.range(0));
    size_t bytes = size_t{dim} * sizeof(float);
    std::mt19937 rng(kSeed);
    for (auto _ : state) {
        fs::path store_dir = scratch("import-store");
        fs::path raw_dir = scratch("import-raw");
        fs::remove_all(store_dir);
        fs::remove_all(raw_dir);
        open_options o;
        o.create_if_missing = true;
        o.meta.dim = dim;
        o.meta.model_fingerprint = kFingerprint;
        auto s = store::open(store_dir.string(), o);
        raw_db raw;
        if (!s ||
            !rocksdb::DB::Open(facevec::storage::internal::raw_store_options(),
                               raw_dir.string(), &raw.db)
                 .ok()) {
            state.SkipWithError("cannot create the databases");
            return;
        }

        times store_time;
        times raw_time;
        for (size_t done = 0; done < g_import_faces; done += kBatchFaces) {
            auto batch = make_batch(done, kBatchFaces, dim, rng);
            rocksdb::Status st = timed(raw_time, [&] {
                rocksdb::WriteBatch wb(kBatchFaces * (bytes + kRawOverhead));
                put_raw(wb, batch, done + 1, bytes);
                return raw.db->Write(rocksdb::WriteOptions(), &wb);
            });
            auto ids =
                timed(store_time, [&] { return s.value()->put_batch(batch); });
            if (!st.ok() || !ids) {
                state.SkipWithError(!st.ok() ? st.ToString().c_str()
                                             : ids.error().to_string().c_str());
                return;
            }
        }
        record(state, "import/" + std::to_string(dim), g_import_faces,
               store_time, raw_time);
        s.value().reset();
        delete raw.db;
        raw.db = nullptr;
        fs::remove_all(store_dir);
        fs::remove_all(raw_dir);
    }
}

// The database both load paths read, made once per process.
const fs::path &load_db() {
    static fs::path dir = [] {
        fs::path d = scratch("load");
        fs::remove_all(d);
        open_options o;
        o.create_if_missing = true;
        o.meta.dim = kLoadDim;
        o.meta.model_fingerprint = kFingerprint;
        auto s = store::open(d.string(), o);
        if (!s) {
            std::fprintf(stderr, "%s\n", s.error().to_string().c_str());
            std::exit(1);
        }
        std::mt19937 rng(kSeed);
        for (size_t done = 0; done < g_faces; done += kBatchFaces) {
            size_t n = std::min(kBatchFaces, g_faces - done);
            auto batch = make_batch(done, n, kLoadDim, rng);
            if (!s.value()->put_batch(batch))
                std::exit(1);
        }
        // Settle compactions so both readers see the same files.
        if (!s.value()->purge().is_ok())
            std::exit(1);
        return d;
    }();
    return dir;
}

// Plain DB::Open with every family (the store's options) and an
// iterator (the store's bulk read options) over the faces family, each
// value's trailing vector copied into one float array; the rows it read.
size_t raw_scan(const fs::path &dir, std::vector<float> &vectors) {
    namespace in = facevec::storage::internal;
    std::vector<std::string> names;
    rocksdb::Options o = in::raw_store_options();
    if (!rocksdb::DB::ListColumnFamilies(o, dir.string(), &names).ok()) {
        return 0;
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto &n : names)
        families.emplace_back(n, o);
    std::vector<rocksdb::ColumnFamilyHandle *> handles;
    rocksdb::DB *db = nullptr;
    if (!rocksdb::DB::Open(o, dir.string(), families, &handles, &db).ok()) {
        return 0;
    }
    size_t faces_cf =
        std::find(names.begin(), names.end(), in::kFacesFamily) - names.begin();

    const size_t bytes = kLoadDim * sizeof(float);
    vectors.clear();
    vectors.reserve(g_faces * kLoadDim);
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(in::bulk_read_options(), handles[faces_cf]));
    size_t rows = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++rows) {
        rocksdb::Slice v = it->value();
        vectors.resize((rows + 1) * kLoadDim);
        std::memcpy(vectors.data() + rows * kLoadDim,
                    v.data() + v.size() - std::min(v.size(), bytes),
                    std::min(v.size(), bytes));
    }
    it.reset();
    for (auto *h : handles) {
        db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    delete db;
    return rows;
}

// store::open + load_all against raw_scan of the same files, in turn.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_OpenLoad(benchmark::State &state) {
    const fs::path &dir = load_db();
    for (auto _ : state) {
        times raw_time;
        times store_time;
        std::vector<float> raw_vectors;
        size_t rows =
            timed(raw_time, [&] { return raw_scan(dir, raw_vectors); });
        benchmark::DoNotOptimize(raw_vectors.data());
        raw_vectors = std::vector<float>();

        std::vector<uint64_t> ids;
        std::vector<float> vectors;
        std::vector<std::string> persons;
        facevec::status st = timed(store_time, [&] {
            auto s = store::open(dir.string(), open_options());
            return s ? s.value()->load_all(ids, vectors, persons) : s.error();
        });
        benchmark::DoNotOptimize(vectors.data());
        if (!st.is_ok() || ids.size() != g_faces || rows != g_faces) {
            state.SkipWithError(st.is_ok() ? "wrong row count"
                                           : st.to_string().c_str());
            return;
        }
        record(state, "load", g_faces, store_time, raw_time);
    }
}

BENCHMARK(BM_Import)
    ->ArgName("dim")
    ->Arg(128)
    ->Arg(512)
    ->Iterations(1)
    ->Repetitions(kRepetitions)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_OpenLoad)
    ->Iterations(1)
    ->Repetitions(kRepetitions)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

double median(std::vector<double> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void print_ratio(const char *what, const std::string &ours,
                 const std::string &base) {
    double a = median(g_rates[ours]);
    double b = median(g_rates[base]);
    if (a == 0 || b == 0)
        return;
    std::printf("%-32s store %9.0f /s  baseline %9.0f /s  ratio %.2fx\n", what,
                a, b, a / b);
}

// Takes our flags out of argv before Google Benchmark parses the rest.
void parse_own_flags(int &argc, char **argv) {
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.starts_with("--faces=")) {
            g_faces = std::stoull(a.substr(std::strlen("--faces=")));
        } else if (a.starts_with("--import_faces=")) {
            g_import_faces =
                std::stoull(a.substr(std::strlen("--import_faces=")));
        } else if (a.starts_with("--dir=")) {
            g_dir = a.substr(std::strlen("--dir="));
        } else {
            argv[kept++] = argv[i];
        }
    }
    argc = kept;
}

}  // namespace

int main(int argc, char **argv) {
    parse_own_flags(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();

    std::printf(
        "\nmedians of %d runs; import %zu faces in batches of %zu; "
        "load %zu x %u\n",
        kRepetitions, g_import_faces, kBatchFaces, g_faces, kLoadDim);
    for (const char *d : {"128", "512"}) {
        std::string name = std::string("import/") + d;
        std::string what = std::string("import d=") + d + " vs raw";
        print_ratio((what + " (wall)").c_str(), name + "/store", name + "/raw");
        print_ratio((what + " (CPU)").c_str(), name + "/cpu_store",
                    name + "/cpu_raw");
    }
    for (const char *clock : {"", "cpu_"}) {
        double load = median(g_rates[std::string("load/") + clock + "store"]);
        double scan = median(g_rates[std::string("load/") + clock + "raw"]);
        if (load > 0 && scan > 0) {
            std::printf(
                "open+load_all %zu x %u (%s): store %.3f s, raw scan %.3f s, "
                "time ratio %.2fx (target <=1.5)\n",
                g_faces, kLoadDim, *clock != 0 ? "CPU" : "wall", g_faces / load,
                g_faces / scan, scan / load);
        }
    }
    std::error_code ec;
    fs::remove_all(scratch("load"), ec);
    return 0;
}
