// facevec's exact scan against FAISS IndexFlatL2 and a plain streaming
// read of the same gallery, in one run.
//
//   scan_bench [--benchmark_filter=...]          N = 1,000,000 rows
//   FACEVEC_BENCH_N=100000 scan_bench            a smaller gallery
//   OMP_NUM_THREADS=1 scan_bench                 one core (quote this;
//                                                rates from CPU time)
//   FACEVEC_BENCH_BATCHES=256,1024,4096 ...      other batch sizes
//
// Arguments: n (gallery rows), dim, batch (queries per call). Counters:
// items_per_second = queries/s, bytes_per_second = gallery bytes read per
// second (n x dim x element size per call), recall@1 / recall@10 of the
// half-width index against FAISS's answer.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <faiss/IndexFlat.h>

#include "index/flat_index.h"
#include "index/scan.h"

namespace {

using facevec::index::flat_index;
using facevec::index::storage_kind;

constexpr int64_t kDefaultRows = 1000000;
constexpr int64_t kDims[] = {128, 512};
constexpr int64_t kDefaultBatches[] = {1, 4, 16, 64, 256};
constexpr int64_t kLargestBatch = 4096;
constexpr size_t kK = 10;
constexpr uint64_t kSeed = 20261204;

int64_t rows_from_env() {
    const char *v = std::getenv("FACEVEC_BENCH_N");
    return v != nullptr && *v != '\0' ? std::atoll(v) : kDefaultRows;
}

// FACEVEC_BENCH_BATCHES="1,64,1024" replaces the default batch sizes (at
// most kLargestBatch).
std::vector<int64_t> batches_from_env() {
    const char *v = std::getenv("FACEVEC_BENCH_BATCHES");
    if (v == nullptr || *v == '\0') {
        return {std::begin(kDefaultBatches), std::end(kDefaultBatches)};
    }
    std::vector<int64_t> batches;
    std::stringstream list(v);
    std::string item;
    while (std::getline(list, item, ',')) {
        batches.push_back(
            std::clamp<int64_t>(std::atoll(item.c_str()), 1, kLargestBatch));
    }
    return batches;
}

// Uniform floats in [-1, 1) from a fast generator: a 1M x 512 gallery is
// filled in about a second.
void fill_random(std::vector<float> &v, uint64_t seed) {
    std::mt19937_64 rng(seed);
    constexpr float kScale = 1.0f / (1u << 23);
    for (float &x : v) {
        x = static_cast<float>(rng() >> 41) * kScale - 1.0f;
    }
}

// One gallery at a time (rebuilt when n or dim changes), with the
// indexes built on demand.
struct gallery {
    int64_t n = 0;
    int64_t dim = 0;
    std::unique_ptr<faiss::IndexFlatL2> faiss_index;
    std::vector<uint16_t> bf16;
    std::unique_ptr<flat_index> index_f32;
    std::unique_ptr<flat_index> index_bf16;
    std::vector<float> queries;  // the largest batch
};

gallery &gallery_for(int64_t n, int64_t dim) {
    static gallery g;
    if (g.n == n && g.dim == dim) {
        return g;
    }
    g = gallery{};
    g.n = n;
    g.dim = dim;
    std::vector<float> rows(static_cast<size_t>(n * dim));
    fill_random(rows, kSeed);
    g.faiss_index = std::make_unique<faiss::IndexFlatL2>(dim);
    g.faiss_index->add(n, rows.data());
    g.queries.resize(static_cast<size_t>(kLargestBatch * dim));
    fill_random(g.queries, kSeed + 1);
    return g;
}

void add_to(flat_index &index, const gallery &g) {
    std::vector<uint64_t> ids(static_cast<size_t>(g.n));
    std::vector<std::string> persons(static_cast<size_t>(g.n));
    for (size_t i = 0; i < ids.size(); ++i) {
        ids[i] = i;
        persons[i] = std::to_string(i);
    }
    index.add(ids, persons, g.faiss_index->get_xb());
}

void set_counters(benchmark::State &state, int64_t batch, size_t row_bytes,
                  int64_t n) {
    state.SetItemsProcessed(state.iterations() * batch);
    state.SetBytesProcessed(state.iterations() * n *
                            static_cast<int64_t>(row_bytes));
    state.counters["threads"] = omp_get_max_threads();
}

// A plain read of the f32 gallery: the memory-bandwidth ceiling.
void bm_stream_read(benchmark::State &state) {
    gallery &g = gallery_for(state.range(0), state.range(1));
    const size_t bytes = static_cast<size_t>(g.n * g.dim) * sizeof(float);
    for (auto _ : state) {
        benchmark::DoNotOptimize(
            facevec::index::stream_read(g.faiss_index->get_xb(), bytes));
    }
    set_counters(state, 1, g.dim * sizeof(float), g.n);
}

// The baseline: FAISS's own flat search.
void bm_faiss_flat(benchmark::State &state) {
    gallery &g = gallery_for(state.range(0), state.range(1));
    const int64_t batch = state.range(2);
    std::vector<float> d(batch * kK);
    std::vector<faiss::Index::idx_t> l(batch * kK);
    for (auto _ : state) {
        g.faiss_index->search(batch, g.queries.data(), kK, d.data(), l.data());
        benchmark::DoNotOptimize(d.data());
    }
    set_counters(state, batch, g.dim * sizeof(float), g.n);
}

// facevec's scan alone (no re-ranking), f32, best instruction set.
void bm_facevec_scan(benchmark::State &state) {
    gallery &g = gallery_for(state.range(0), state.range(1));
    const int64_t batch = state.range(2);
    std::vector<float> d(batch * kK);
    std::vector<int64_t> l(batch * kK);
    for (auto _ : state) {
        facevec::index::scan_knn(g.queries.data(), batch,
                                 g.faiss_index->get_xb(), storage_kind::f32,
                                 g.n, g.dim, kK, d.data(), l.data());
        benchmark::DoNotOptimize(d.data());
    }
    set_counters(state, batch, g.dim * sizeof(float), g.n);
}

// Fraction of FAISS's top-1 / top-10 ids the index returns.
void recall_counters(benchmark::State &state, const gallery &g,
                     const flat_index &index, int64_t batch) {
    std::vector<float> d(batch * kK);
    std::vector<faiss::Index::idx_t> l(batch * kK);
    g.faiss_index->search(batch, g.queries.data(), kK, d.data(), l.data());
    const auto hits = index.search_faces(g.queries.data(), batch, kK);
    double at1 = 0;
    double at10 = 0;
    for (int64_t q = 0; q < batch; ++q) {
        at1 += !hits[q].empty() &&
               hits[q][0].face == static_cast<uint64_t>(l[q * kK]);
        for (const auto &h : hits[q]) {
            for (size_t j = 0; j < kK; ++j) {
                at10 += h.face == static_cast<uint64_t>(l[q * kK + j]);
            }
        }
    }
    state.counters["recall@1"] = at1 / batch;
    state.counters["recall@10"] = at10 / (batch * kK);
}

// The product path: flat_index::search_faces (scan or FAISS by batch
// size, then exact re-ranking), f32 or bf16 storage.
void index_bench(benchmark::State &state, storage_kind kind) {
    gallery &g = gallery_for(state.range(0), state.range(1));
    const int64_t batch = state.range(2);
    auto &slot = kind == storage_kind::f32 ? g.index_f32 : g.index_bf16;
    if (!slot) {
        slot = std::make_unique<flat_index>(g.dim, kind);
        add_to(*slot, g);
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize(
            slot->search_faces(g.queries.data(), batch, kK));
    }
    set_counters(state, batch, g.dim * facevec::index::element_bytes(kind),
                 g.n);
    recall_counters(state, g, *slot, batch);
}

void bm_facevec_index_f32(benchmark::State &state) {
    index_bench(state, storage_kind::f32);
}

void bm_facevec_index_bf16(benchmark::State &state) {
    index_bench(state, storage_kind::bf16);
}

void process_cpu_clock(benchmark::internal::Benchmark *b) {
    b->MeasureProcessCPUTime();
}

void wall_clock(benchmark::internal::Benchmark *b) {
    b->UseRealTime();
}

// Registers every benchmark for one dim after the other, so each gallery
// is built once.
void register_all() {
    const int64_t n = rows_from_env();
    // One thread: rates from this process's CPU time, so other processes
    // sharing the cores do not count; several: wall time.
    const auto clock =
        omp_get_max_threads() == 1 ? process_cpu_clock : wall_clock;
    for (int64_t dim : kDims) {
        benchmark::RegisterBenchmark("BM_stream_read", bm_stream_read)
            ->Args({n, dim})
            ->ArgNames({"n", "dim"})
            ->Unit(benchmark::kMillisecond)
            ->Apply(clock);
        using bench_fn = void (*)(benchmark::State &);
        const std::pair<const char *, bench_fn> families[] = {
            {"BM_faiss_flat", bm_faiss_flat},
            {"BM_facevec_scan", bm_facevec_scan},
            {"BM_facevec_index_f32", bm_facevec_index_f32},
            {"BM_facevec_index_bf16", bm_facevec_index_bf16}};
        for (const auto &[name, fn] : families) {
            for (int64_t batch : batches_from_env()) {
                benchmark::RegisterBenchmark(name, fn)
                    ->Args({n, dim, batch})
                    ->ArgNames({"n", "dim", "batch"})
                    ->Unit(benchmark::kMillisecond)
                    ->Apply(clock);
            }
        }
    }
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
