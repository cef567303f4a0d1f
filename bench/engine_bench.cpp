// The engine against its baselines, on the same data in the same run:
//
// - query throughput through engine::query (per-person top-k, decision)
//   against a raw FAISS IndexFlatL2 search, at batch 1, 16 and 256; the
//   engine's runs carry ratio_vs_faiss (target >= 0.95 at batch 256);
// - p50 and p99 latency of single queries, both ways;
// - engine::open (store read, index build, maps) of a database of
//   n x 512 against plain DB::Open of the same files (the store's
//   options) plus one pass copying every vector into one array; the
//   BM_open runs carry open_vs_scan (wall) and cpu_open_vs_scan
//   (calling thread's CPU time), target <= 1.5.
//
// Sizes come from the environment (defaults are small):
//   FACEVEC_BENCH_SIZES=100000,1000000  vectors per database
//   FACEVEC_BENCH_DIMS=128,512          dims
//   FACEVEC_BENCH_OPEN_N=1000000        vectors for the open benchmark
//                                       (default 20000)
// Quote 1-thread figures: run with OMP_NUM_THREADS=1.
#include <time.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <faiss/IndexFlat.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include "api/engine.h"
#include "storage/codec.h"
#include "storage/options.h"

namespace facevec {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

constexpr int kTopK = 10;
constexpr size_t kEnrollBatch = 10000;
constexpr size_t kQueryPool = 4096;
constexpr unsigned kSeed = 42;
constexpr double kP50 = 0.50;
constexpr double kP99 = 0.99;
constexpr double kMicrosPerSecond = 1e6;
// A few faces per person, as in a real gallery.
constexpr size_t kFacesPerPerson = 4;

std::vector<size_t> env_list(const char *name, const std::string &fallback) {
    const char *v = std::getenv(name);
    std::stringstream s(v != nullptr && *v != '\0' ? v : fallback);
    std::vector<size_t> out;
    for (std::string item; std::getline(s, item, ',');) {
        out.push_back(std::stoull(item));
    }
    return out;
}

fs::path bench_root() {
    static fs::path root = [] {
        fs::path p = fs::temp_directory_path() /
                     ("facevec-bench-" + std::to_string(getpid()));
        fs::create_directories(p);
        return p;
    }();
    return root;
}

std::vector<float> random_vectors(size_t n, size_t d, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g;
    std::vector<float> v(n * d);
    for (float &x : v)
        x = g(rng);
    return v;
}

// A database of n random vectors of dim d, enrolled through the engine.
std::string make_database(size_t n, size_t d, const std::vector<float> &v) {
    std::string path =
        (bench_root() / ("db-" + std::to_string(n) + "-" + std::to_string(d)))
            .string();
    if (fs::exists(path))
        return path;
    engine_options o;
    o.create_if_missing = true;
    o.meta.dim = uint32_t(d);
    auto e = engine::open(path, o);
    if (!e)
        std::abort();
    for (size_t first = 0; first < n; first += kEnrollBatch) {
        size_t count = std::min(kEnrollBatch, n - first);
        std::vector<enroll_item> items(count);
        for (size_t i = 0; i < count; ++i) {
            size_t row = first + i;
            items[i].person = "p" + std::to_string(row / kFacesPerPerson);
            items[i].embedding.assign(v.begin() + row * d,
                                      v.begin() + (row + 1) * d);
        }
        if (!(*e)->enroll(items).is_ok())
            std::abort();
    }
    return path;
}

// One data set with its engine, FAISS index and query pool. Only the
// last one asked for is kept, to bound memory.
struct data_set {
    size_t n = 0;
    size_t d = 0;
    std::unique_ptr<engine> eng;
    std::unique_ptr<faiss::IndexFlatL2> faiss_index;
    std::vector<float> queries;  // kQueryPool x d
};

std::unique_ptr<data_set> &current_set() {
    static std::unique_ptr<data_set> current;
    return current;
}

data_set &data_for(size_t n, size_t d) {
    std::unique_ptr<data_set> &current = current_set();
    if (current && current->n == n && current->d == d)
        return *current;
    current.reset();

    auto s = std::make_unique<data_set>();
    s->n = n;
    s->d = d;
    std::vector<float> v = random_vectors(n, d, kSeed);
    auto e = engine::open(make_database(n, d, v), engine_options{});
    if (!e)
        std::abort();
    s->eng = std::move(e).value();
    s->faiss_index = std::make_unique<faiss::IndexFlatL2>(int(d));
    s->faiss_index->add(faiss::Index::idx_t(n), v.data());
    s->queries = random_vectors(kQueryPool, d, kSeed + 1);
    current = std::move(s);
    return *current;
}

// Queries per second of the last FAISS run, per (n, d, batch).
std::map<std::tuple<size_t, size_t, size_t>, double> &faiss_qps() {
    static std::map<std::tuple<size_t, size_t, size_t>, double> m;
    return m;
}

const float *query_batch(const data_set &s, size_t i, size_t batch) {
    size_t slots = kQueryPool / batch;
    return s.queries.data() + (i % slots) * batch * s.d;
}

void bm_faiss_query(benchmark::State &state, size_t n, size_t d, size_t batch) {
    data_set &s = data_for(n, d);
    std::vector<float> dist(batch * kTopK);
    std::vector<faiss::Index::idx_t> labels(batch * kTopK);
    size_t i = 0;
    auto start = clock_type::now();
    for (auto _ : state) {
        s.faiss_index->search(faiss::Index::idx_t(batch),
                              query_batch(s, i++, batch), kTopK, dist.data(),
                              labels.data());
        benchmark::DoNotOptimize(labels.data());
    }
    double secs =
        std::chrono::duration<double>(clock_type::now() - start).count();
    faiss_qps()[{n, d, batch}] = double(i * batch) / secs;
    state.SetItemsProcessed(int64_t(i * batch));
}

void bm_engine_query(benchmark::State &state, size_t n, size_t d,
                     size_t batch) {
    data_set &s = data_for(n, d);
    size_t i = 0;
    auto start = clock_type::now();
    for (auto _ : state) {
        auto a = s.eng->query(query_batch(s, i++, batch), batch, kTopK);
        if (!a)
            state.SkipWithError(a.error().message().c_str());
        benchmark::DoNotOptimize(a);
    }
    double secs =
        std::chrono::duration<double>(clock_type::now() - start).count();
    state.SetItemsProcessed(int64_t(i * batch));
    auto base = faiss_qps().find({n, d, batch});
    if (base != faiss_qps().end() && secs > 0) {
        state.counters["ratio_vs_faiss"] =
            double(i * batch) / secs / base->second;
    }
}

// Single-query latency with p50 and p99 counters, in microseconds.
template <typename Fn>
void latency_loop(benchmark::State &state, Fn &&one_query) {
    std::vector<double> us;
    size_t i = 0;
    for (auto _ : state) {
        auto t0 = clock_type::now();
        one_query(i++);
        double secs =
            std::chrono::duration<double>(clock_type::now() - t0).count();
        state.SetIterationTime(secs);
        us.push_back(secs * kMicrosPerSecond);
    }
    std::sort(us.begin(), us.end());
    auto at = [&](double q) { return us[size_t(q * double(us.size() - 1))]; };
    state.counters["p50_us"] = at(kP50);
    state.counters["p99_us"] = at(kP99);
}

void bm_faiss_latency(benchmark::State &state, size_t n, size_t d) {
    data_set &s = data_for(n, d);
    std::vector<float> dist(kTopK);
    std::vector<faiss::Index::idx_t> labels(kTopK);
    latency_loop(state, [&](size_t i) {
        s.faiss_index->search(1, query_batch(s, i, 1), kTopK, dist.data(),
                              labels.data());
    });
}

void bm_engine_latency(benchmark::State &state, size_t n, size_t d) {
    data_set &s = data_for(n, d);
    latency_loop(state, [&](size_t i) {
        auto a = s.eng->query(query_batch(s, i, 1), 1, kTopK);
        benchmark::DoNotOptimize(a);
    });
}

// The open benchmark's database: n vectors of dim 512.
constexpr size_t kOpenDim = 512;
constexpr int kOpenRepetitions = 3;

std::string open_database(size_t n) {
    current_set().reset();  // the query benchmarks' engine may hold it
    static std::map<size_t, std::string> made;
    auto it = made.find(n);
    if (it != made.end())
        return it->second;
    std::vector<float> v = random_vectors(n, kOpenDim, kSeed + 2);
    return made[n] = make_database(n, kOpenDim, v);
}

double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Wall and calling-thread CPU seconds of fn().
template <typename Fn>
std::pair<double, double> timed(Fn &&fn) {
    auto wall = clock_type::now();
    double cpu = thread_cpu_seconds();
    fn();
    return {std::chrono::duration<double>(clock_type::now() - wall).count(),
            thread_cpu_seconds() - cpu};
}

// The baseline: plain DB::Open of the same files with the store's own
// options, and one pass over the faces family (the store's bulk read
// options) copying each value's trailing vector into one float array.
// The rows read; 0 on a failure.
size_t raw_scan(const std::string &path, size_t n, std::vector<float> &out) {
    namespace in = storage::internal;
    rocksdb::Options o = in::raw_store_options();
    std::vector<std::string> names;
    if (!rocksdb::DB::ListColumnFamilies(o, path, &names).ok())
        return 0;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const auto &name : names)
        cfs.emplace_back(name, o);
    std::vector<rocksdb::ColumnFamilyHandle *> handles;
    rocksdb::DB *raw = nullptr;
    if (!rocksdb::DB::Open(o, path, cfs, &handles, &raw).ok())
        return 0;
    std::unique_ptr<rocksdb::DB> db(raw);
    size_t faces =
        size_t(std::find(names.begin(), names.end(), in::kFacesFamily) -
               names.begin());

    const size_t bytes = kOpenDim * sizeof(float);
    out.clear();
    out.reserve(n * kOpenDim);
    size_t rows = 0;
    {
        std::unique_ptr<rocksdb::Iterator> it(
            db->NewIterator(in::bulk_read_options(), handles[faces]));
        for (it->SeekToFirst(); it->Valid(); it->Next(), ++rows) {
            rocksdb::Slice v = it->value();
            if (v.size() < bytes)
                return 0;
            const auto *f =
                reinterpret_cast<const float *>(v.data() + v.size() - bytes);
            out.insert(out.end(), f, f + kOpenDim);
        }
    }
    for (auto *h : handles)
        db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    return rows;
}

// engine::open (store read, index build, maps) against raw_scan of the
// same database, in turn; counters give both times and their ratios
// (wall and calling-thread CPU; target open <= 1.5x the scan).
void bm_open(benchmark::State &state, size_t n) {
    std::string path = open_database(n);
    // Warm-up, not timed: the first open after the import replays and
    // flushes the write-ahead log, which neither side should pay.
    if (!engine::open(path, engine_options{})) {
        state.SkipWithError("cannot open the database");
        return;
    }
    double raw_wall = 0, raw_cpu = 0, open_wall = 0, open_cpu = 0;
    for (auto _ : state) {
        std::vector<float> copy;
        size_t rows = 0;
        auto [rw, rc] = timed([&] { rows = raw_scan(path, n, copy); });
        benchmark::DoNotOptimize(copy.data());
        copy = std::vector<float>();

        std::optional<result<std::unique_ptr<engine>>> e;
        auto [ow, oc] =
            timed([&] { e.emplace(engine::open(path, engine_options{})); });
        if (!*e || rows != n || (**e)->stats().indexed != n) {
            state.SkipWithError(*e ? "wrong row count"
                                   : e->error().message().c_str());
            return;
        }
        e.reset();
        state.SetIterationTime(ow);
        raw_wall += rw;
        raw_cpu += rc;
        open_wall += ow;
        open_cpu += oc;
    }
    double it = double(state.iterations());
    state.counters["raw_scan_s"] = raw_wall / it;
    state.counters["open_s"] = open_wall / it;
    state.counters["open_vs_scan"] = open_wall / raw_wall;
    state.counters["cpu_open_vs_scan"] = open_cpu / raw_cpu;
    state.SetItemsProcessed(int64_t(state.iterations() * n));
}

constexpr std::array<size_t, 3> kBatches = {1, 16, 256};

void register_all() {
    for (size_t n : env_list("FACEVEC_BENCH_SIZES", "100000")) {
        for (size_t d : env_list("FACEVEC_BENCH_DIMS", "128,512")) {
            std::string tag =
                "/n:" + std::to_string(n) + "/d:" + std::to_string(d);
            for (size_t b : kBatches) {
                std::string bt = tag + "/batch:" + std::to_string(b);
                benchmark::RegisterBenchmark(("BM_faiss_query" + bt).c_str(),
                                             bm_faiss_query, n, d, b)
                    ->UseRealTime();
                benchmark::RegisterBenchmark(("BM_engine_query" + bt).c_str(),
                                             bm_engine_query, n, d, b)
                    ->UseRealTime();
            }
            benchmark::RegisterBenchmark(("BM_faiss_latency" + tag).c_str(),
                                         bm_faiss_latency, n, d)
                ->UseManualTime();
            benchmark::RegisterBenchmark(("BM_engine_latency" + tag).c_str(),
                                         bm_engine_latency, n, d)
                ->UseManualTime();
        }
    }
    for (size_t n : env_list("FACEVEC_BENCH_OPEN_N", "20000")) {
        benchmark::RegisterBenchmark(
            ("BM_open/n:" + std::to_string(n) + "/d:512").c_str(), bm_open, n)
            ->Unit(benchmark::kMillisecond)
            ->Iterations(1)
            ->Repetitions(kOpenRepetitions)
            ->UseManualTime();
    }
}

}  // namespace
}  // namespace facevec

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    facevec::register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();

    // Close the last engine before its files go and statics unwind.
    facevec::current_set().reset();
    std::error_code ec;
    std::filesystem::remove_all(facevec::bench_root(), ec);
    return 0;
}
