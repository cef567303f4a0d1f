// The face store against plain RocksDB, in the same run, batch by batch
// in turn so that both see the same load on a shared machine:
//   BM_Import: bulk import through store::put_batch (vectors, metadata,
//     indexes, counters; batches of kBatchFaces) against plain RocksDB
//     WriteBatches holding only the same vectors ("raw") or the same
//     records in one column family ("raw_records"). Target: >= 0.7x.
//   BM_OpenLoad: store::open + load_all of a database of --faces faces at
//     d=512 against plain DB::Open + an iterator over its vectors column
//     family copied into one float array (warm page cache). Target: the
//     store takes <= 1.5x the raw time.
// Counters: items_per_second (store), <baseline>_items_per_second and
// store_vs_<baseline> (rate ratio).
// The summary at the end prints the medians and their ratios.
//
//   store_bench [--faces=N] [--import_faces=N] [--dir=PATH]
//               [benchmark flags]
// Defaults: --faces=100000, --import_faces=50000, --dir=the temp dir.
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
constexpr size_t kDefaultFaces = 100000;
constexpr size_t kDefaultImportFaces = 50000;
constexpr int kRepetitions = 3;

size_t g_faces = kDefaultFaces;
size_t g_import_faces = kDefaultImportFaces;
fs::path g_dir = fs::temp_directory_path();

// Rates (items per second) of every repetition, by benchmark name.
std::map<std::string, std::vector<double>> g_rates;

fs::path scratch(const std::string &name) {
    return g_dir /
           ("facevec-store-bench-" + std::to_string(getpid()) + "-" + name);
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
        f.model_fingerprint = "facenet-512-v1";
        f.content_hash = std::string(32, 'h') + std::to_string(k);
    }
    return batch;
}

double seconds(std::chrono::steady_clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

// Sets the store's rate, each baseline's rate and the ratios as counters,
// and keeps them for the summary.
void record(benchmark::State &state, const std::string &name, size_t items,
            std::chrono::steady_clock::duration store_time,
            const std::map<std::string, std::chrono::steady_clock::duration>
                &baselines) {
    double store_rate = static_cast<double>(items) / seconds(store_time);
    g_rates[name + "/store"].push_back(store_rate);
    state.SetIterationTime(seconds(store_time));
    state.SetItemsProcessed(static_cast<int64_t>(items));
    for (const auto &[base, t] : baselines) {
        double rate = static_cast<double>(items) / seconds(t);
        g_rates[name + "/" + base].push_back(rate);
        state.counters[base + "_items_per_second"] = rate;
        state.counters["store_vs_" + base] = store_rate / rate;
    }
}

// A plain RocksDB database with only the default column family.
struct raw_db {
    rocksdb::DB *db = nullptr;
    ~raw_db() { delete db; }
};

// The plain WriteBatch of baseline "raw": the vectors keyed by id.
void put_vectors(rocksdb::WriteBatch &wb, const std::vector<face_record> &b,
                 size_t first_id, size_t bytes) {
    for (size_t i = 0; i < b.size(); ++i) {
        wb.Put(
            facevec::storage::internal::id_key(first_id + i),
            rocksdb::Slice(
                reinterpret_cast<const char *>(b[i].embedding.data()), bytes));
    }
}

// The plain WriteBatch of baseline "raw_records": the same keys and
// values the store writes per face (vector, metadata, person index, hash),
// in one column family, without the store's logic.
void put_records(rocksdb::WriteBatch &wb, const std::vector<face_record> &b,
                 size_t first_id, size_t bytes) {
    namespace in = facevec::storage::internal;
    put_vectors(wb, b, first_id, bytes);
    for (size_t i = 0; i < b.size(); ++i) {
        std::string key = in::id_key(first_id + i);
        wb.Put("f" + key, in::encode_face_meta(b[i]));
        wb.Put("p" + in::person_face_key(b[i].person, first_id + i), "");
        wb.Put("h" + in::hash_key(b[i].person, b[i].content_hash), key);
    }
}

// Imports the same faces through store::put_batch and, batch by batch in
// turn, as plain WriteBatches into plain databases, so all sides see the
// same load on the machine.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_Import(benchmark::State &state) {
    auto dim = static_cast<uint32_t>(state.range(0));
    size_t bytes = size_t{dim} * sizeof(float);
    std::mt19937 rng(kSeed);
    using writer = void (*)(rocksdb::WriteBatch &,
                            const std::vector<face_record> &, size_t, size_t);
    const std::vector<std::pair<std::string, writer>> bases = {
        {"raw", put_vectors}, {"raw_records", put_records}};
    for (auto _ : state) {
        fs::path store_dir = scratch("import-store");
        fs::remove_all(store_dir);
        open_options o;
        o.create_if_missing = true;
        o.meta.dim = dim;
        auto s = store::open(store_dir.string(), o);
        std::vector<raw_db> raws(bases.size());
        rocksdb::Options ro;
        ro.create_if_missing = true;
        bool opened = s.is_ok();
        for (size_t i = 0; i < bases.size(); ++i) {
            fs::path d = scratch("import-" + bases[i].first);
            fs::remove_all(d);
            opened =
                opened && rocksdb::DB::Open(ro, d.string(), &raws[i].db).ok();
        }
        if (!opened) {
            state.SkipWithError("cannot create the databases");
            return;
        }

        std::chrono::steady_clock::duration store_time{};
        std::map<std::string, std::chrono::steady_clock::duration> times;
        for (size_t done = 0; done < g_import_faces; done += kBatchFaces) {
            auto batch = make_batch(done, kBatchFaces, dim, rng);
            for (size_t i = 0; i < bases.size(); ++i) {
                auto start = std::chrono::steady_clock::now();
                rocksdb::WriteBatch wb;
                bases[i].second(wb, batch, done + 1, bytes);
                rocksdb::Status st =
                    raws[i].db->Write(rocksdb::WriteOptions(), &wb);
                times[bases[i].first] +=
                    std::chrono::steady_clock::now() - start;
                if (!st.ok()) {
                    state.SkipWithError(st.ToString().c_str());
                    return;
                }
            }
            auto start = std::chrono::steady_clock::now();
            auto ids = s.value()->put_batch(batch);
            store_time += std::chrono::steady_clock::now() - start;
            if (!ids) {
                state.SkipWithError(ids.error().to_string().c_str());
                return;
            }
        }
        record(state, "import/" + std::to_string(dim), g_import_faces,
               store_time, times);
        s.value().reset();
        raws.clear();
        fs::remove_all(store_dir);
        for (const auto &b : bases)
            fs::remove_all(scratch("import-" + b.first));
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

// Plain DB::Open with every family and an iterator over the vectors
// family, copied into one float array; the rows it read.
size_t raw_scan(const fs::path &dir, std::vector<float> &vectors) {
    std::vector<std::string> names;
    rocksdb::Options o;
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
    size_t vectors_cf = std::find(names.begin(), names.end(),
                                  facevec::storage::internal::kVectorsFamily) -
                        names.begin();

    vectors.clear();
    vectors.reserve(g_faces * kLoadDim);
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handles[vectors_cf]));
    size_t rows = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next(), ++rows) {
        vectors.resize((rows + 1) * kLoadDim);
        std::memcpy(vectors.data() + rows * kLoadDim, it->value().data(),
                    std::min(it->value().size(), kLoadDim * sizeof(float)));
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
        std::vector<float> raw_vectors;
        auto start = std::chrono::steady_clock::now();
        size_t rows = raw_scan(dir, raw_vectors);
        auto middle = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(raw_vectors.data());
        raw_vectors = std::vector<float>();

        auto middle2 = std::chrono::steady_clock::now();
        auto s = store::open(dir.string(), open_options());
        std::vector<uint64_t> ids;
        std::vector<float> vectors;
        std::vector<std::string> persons;
        facevec::status st =
            s ? s.value()->load_all(ids, vectors, persons) : s.error();
        auto end = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(vectors.data());
        if (!st.is_ok() || ids.size() != g_faces || rows != g_faces) {
            state.SkipWithError(st.is_ok() ? "wrong row count"
                                           : st.to_string().c_str());
            return;
        }
        record(state, "load", g_faces, end - middle2,
               {{"raw", middle - start}});
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
        for (const char *base : {"raw", "raw_records"}) {
            std::string what = std::string("import d=") + d + " vs " + base;
            print_ratio(what.c_str(), name + "/store", name + "/" + base);
        }
    }
    double load = median(g_rates["load/store"]);
    double scan = median(g_rates["load/raw"]);
    if (load > 0 && scan > 0) {
        std::printf(
            "open+load_all %zu x %u: store %.3f s, raw scan %.3f s, "
            "time ratio %.2fx (target <=1.5)\n",
            g_faces, kLoadDim, g_faces / load, g_faces / scan, scan / load);
    }
    std::error_code ec;
    fs::remove_all(scratch("load"), ec);
    return 0;
}
