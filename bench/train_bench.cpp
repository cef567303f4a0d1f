// Training throughput of the embedding head and the feature cache's read
// rate, each against a baseline in the same run:
//   BM_train_step (forward, mining, loss, backward, Adam) vs BM_head_forward
//   (inference only, same batch);
//   BM_feature_cache_hit (header check + n x d floats) vs BM_raw_file_read
//   (the same bytes through one fread).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "train/features.h"
#include "train/head.h"
#include "train/optimizer.h"
#include "train/triplet.h"

namespace {

using facevec::train::embedding_head;
using facevec::train::feature_cache;
using facevec::train::head_activations;
using facevec::train::head_config;
using facevec::train::mining;
using facevec::train::optimizer;
using facevec::train::optimizer_config;
using facevec::train::triplet;

constexpr uint64_t kSeed = 3;
constexpr size_t kPersons = 16;  // P
constexpr size_t kImages = 4;    // K
constexpr size_t kBatch = kPersons * kImages;
constexpr size_t kOutput = 128;
constexpr float kMargin = 0.2f;
constexpr size_t kCacheRows = 10000;
constexpr size_t kCacheDim = 512;

struct batch_data {
    std::vector<float> x;
    std::vector<int> labels;
};

batch_data make_batch(size_t dim) {
    std::mt19937 gen(kSeed);
    std::normal_distribution<float> nd;
    batch_data b;
    b.x.resize(kBatch * dim);
    for (float &v : b.x)
        v = nd(gen);
    for (size_t i = 0; i < kBatch; ++i) {
        b.labels.push_back(static_cast<int>(i / kImages));
    }
    return b;
}

head_config config_for(const benchmark::State &state) {
    return {static_cast<size_t>(state.range(0)),
            static_cast<size_t>(state.range(1)), kOutput, true,
            facevec::train::head_init::random};
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_head_forward(benchmark::State &state) {
    const head_config c = config_for(state);
    embedding_head head = embedding_head::create(c, kSeed).value();
    batch_data b = make_batch(c.input_dim);
    std::vector<float> y(kBatch * kOutput);
    for (auto _ : state) {
        head.embed(b.x.data(), kBatch, y.data());
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["rows/s"] =
        benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                           benchmark::Counter::kIsRate);
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_train_step(benchmark::State &state) {
    const head_config c = config_for(state);
    embedding_head head = embedding_head::create(c, kSeed).value();
    batch_data b = make_batch(c.input_dim);
    optimizer opt(optimizer_config{});
    head_activations acts;
    std::vector<std::vector<float>> grads;
    std::vector<float> gy(kBatch * kOutput);
    size_t triplets = 0;
    for (auto _ : state) {
        head.forward_train(b.x.data(), kBatch, &acts);
        std::vector<float> d =
            facevec::train::pairwise_squared_l2(acts.y.data(), kBatch, kOutput);
        std::vector<triplet> ts = facevec::train::mine_triplets(
            d, b.labels, mining::batch_hard, kMargin);
        facevec::train::triplet_loss(acts.y.data(), kBatch, kOutput, ts,
                                     kMargin, gy.data());
        head.backward(acts, gy.data(), &grads);
        opt.step(head.mutable_tensors(), grads, 1e-4f);
        triplets += ts.size();
    }
    state.counters["rows/s"] =
        benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                           benchmark::Counter::kIsRate);
    state.counters["triplets/s"] = benchmark::Counter(
        static_cast<double>(triplets), benchmark::Counter::kIsRate);
}

// Input dim (512: vgg16 features, 128: face-resnet) x hidden width.
void head_shapes(benchmark::internal::Benchmark *b) {
    b->ArgNames({"in", "hidden"});
    for (int64_t in : {128, 512}) {
        for (int64_t hidden : {0, 256})
            b->Args({in, hidden});
    }
    b->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_head_forward)->Apply(head_shapes);
BENCHMARK(BM_train_step)->Apply(head_shapes);

struct cache_fixture {
    std::string path;
    std::vector<std::string> images;
    cache_fixture() {
        path = (std::filesystem::temp_directory_path() /
                ("facevec-train-bench-" + std::to_string(getpid())))
                   .string();
        for (size_t i = 0; i < kCacheRows; ++i) {
            images.push_back("lfw/p" + std::to_string(i) + ".jpg");
        }
        (void)feature_cache(path, {"bench", "none"})
            .get(images, [](const std::string &) {
                return facevec::result<std::vector<float>>(
                    std::vector<float>(kCacheDim, 0.5f));
            });
    }
    ~cache_fixture() { std::filesystem::remove(path); }
};

cache_fixture &fixture() {
    static cache_fixture f;
    return f;
}

constexpr size_t kCacheBytes = kCacheRows * kCacheDim * sizeof(float);

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_feature_cache_hit(benchmark::State &state) {
    cache_fixture &f = fixture();
    feature_cache cache(f.path, {"bench", "none"});
    auto never =
        [](const std::string &p) -> facevec::result<std::vector<float>> {
        return facevec::invalid_argument(p + ": cache missed");
    };
    for (auto _ : state) {
        auto m = cache.get(f.images, never);
        if (!m) {
            state.SkipWithError(m.error().message().c_str());
            break;
        }
        benchmark::DoNotOptimize(m->data.data());
    }
    state.SetBytesProcessed(
        static_cast<int64_t>(state.iterations() * kCacheBytes));
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_raw_file_read(benchmark::State &state) {
    cache_fixture &f = fixture();
    std::vector<float> buf(kCacheRows * kCacheDim);
    for (auto _ : state) {
        std::FILE *fp = std::fopen(f.path.c_str(), "rb");
        size_t got = std::fread(buf.data(), 1, kCacheBytes, fp);
        std::fclose(fp);
        benchmark::DoNotOptimize(got);
    }
    state.SetBytesProcessed(
        static_cast<int64_t>(state.iterations() * kCacheBytes));
}

BENCHMARK(BM_raw_file_read)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_feature_cache_hit)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
