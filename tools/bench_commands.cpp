// facevec bench: measurements runnable from the command line, each
// printing one JSON object on stdout.
//
//   facevec bench scan --n 1000000 --dim 512 --batch 1 [--storage bf16]
//                      [--threads 1] [--seconds 2]
//
// With one thread the rates are from this process's CPU time ("clock":
// "cpu" in the output), with more from wall time.
#include <omp.h>

#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <faiss/IndexFlat.h>
#include <nlohmann/json.hpp>

#include "index/flat_index.h"
#include "index/scan.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace facevec::cli {
namespace {

constexpr uint64_t kSeed = 20261204;
constexpr int kMinRuns = 3;
constexpr double kBytesPerGigabyte = 1e9;
constexpr double kNanosecondsPerSecond = 1e9;

struct scan_bench_options {
    uint64_t n = 100000;
    uint32_t dim = 512;
    uint32_t batch = 1;
    std::string storage = "f32";
    int threads = 0;  // 0: omp_get_max_threads()
    uint32_t k = 10;  // recall@10 needs the top 10
    double seconds = 2;
};

// Uniform floats in [-1, 1): fast enough for a 1M x 512 gallery.
std::vector<float> random_floats(size_t count, uint64_t seed) {
    constexpr int kDropBits = 41;  // keep 23 random bits
    constexpr float kScale = 1.0f / (1u << 23);
    std::mt19937_64 rng(seed);
    std::vector<float> v(count);
    for (float &x : v) {
        x = static_cast<float>(rng() >> kDropBits) * kScale - 1.0f;
    }
    return v;
}

// Seconds on the clock the figures use: this process's CPU time when it
// runs one thread (other processes sharing the cores then do not count),
// wall time otherwise (CPU time would add the threads up).
double now_seconds(bool cpu_time) {
    if (cpu_time) {
        timespec t{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return static_cast<double>(t.tv_sec) +
               static_cast<double>(t.tv_nsec) / kNanosecondsPerSecond;
    }
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Calls fn once to warm up, then until `seconds` have passed and it ran
// at least kMinRuns times; returns calls per second.
double calls_per_second(const std::function<void()> &fn, double seconds,
                        bool cpu_time) {
    fn();
    const double start = now_seconds(cpu_time);
    int runs = 0;
    double elapsed = 0;
    while (runs < kMinRuns || elapsed < seconds) {
        fn();
        ++runs;
        elapsed = now_seconds(cpu_time) - start;
    }
    return runs / elapsed;
}

status check_options(const scan_bench_options &o, index::storage_kind *kind) {
    if (o.n == 0 || o.dim == 0 || o.batch == 0) {
        return invalid_argument(
            "bench scan: --n, --dim and --batch must be >= 1 (got n " +
            std::to_string(o.n) + ", dim " + std::to_string(o.dim) +
            ", batch " + std::to_string(o.batch) + ")");
    }
    if (o.threads < 0 || !(o.seconds > 0)) {
        return invalid_argument(
            "bench scan: --threads must be >= 0 and --seconds > 0 (got " +
            std::to_string(o.threads) + " and " + std::to_string(o.seconds) +
            ")");
    }
    if (o.storage == "f32") {
        *kind = index::storage_kind::f32;
    } else if (o.storage == "bf16") {
        *kind = index::storage_kind::bf16;
    } else if (o.storage == "fp16") {
        *kind = index::storage_kind::fp16;
    } else {
        return invalid_argument("bench scan: --storage '" + o.storage +
                                "' is not f32, bf16 or fp16");
    }
    return status::ok();
}

// The 1-minute load average (0 when unknown): other processes share the
// cores and the memory bus, which these figures do not hide.
double load_average() {
    double load = 0;
    if (std::FILE *f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &load) != 1) {
            load = 0;
        }
        std::fclose(f);
    }
    return load;
}

// Fraction of FAISS's top-1 and top-k ids that facevec returns.
std::pair<double, double> recall(
    const std::vector<std::vector<index::hit>> &ours,
    const std::vector<faiss::Index::idx_t> &faiss_labels, size_t k) {
    double at1 = 0;
    double atk = 0;
    for (size_t q = 0; q < ours.size(); ++q) {
        const auto *want = faiss_labels.data() + q * k;
        at1 += !ours[q].empty() &&
               ours[q][0].face == static_cast<uint64_t>(want[0]);
        for (const index::hit &h : ours[q]) {
            for (size_t j = 0; j < k; ++j) {
                atk += h.face == static_cast<uint64_t>(want[j]);
            }
        }
    }
    const auto n = static_cast<double>(ours.size());
    return {at1 / n, atk / (n * static_cast<double>(k))};
}

void run_scan_bench(const scan_bench_options &o) {
    index::storage_kind kind = index::storage_kind::f32;
    if (status s = check_options(o, &kind); !s.is_ok()) {
        fail(s);
        return;
    }
    if (o.threads > 0) {
        omp_set_num_threads(o.threads);
    }
    const int threads = omp_get_max_threads();
    const bool cpu_time = threads == 1;

    // The gallery lives in the FAISS baseline; facevec's index copies it.
    faiss::IndexFlatL2 baseline(static_cast<faiss::Index::idx_t>(o.dim));
    {
        const std::vector<float> rows = random_floats(o.n * o.dim, kSeed);
        baseline.add(static_cast<faiss::Index::idx_t>(o.n), rows.data());
    }
    index::flat_index ours(o.dim, kind);
    {
        std::vector<uint64_t> ids(o.n);
        std::vector<std::string> persons(o.n);
        for (uint64_t i = 0; i < o.n; ++i) {
            ids[i] = i;
            persons[i] = std::to_string(i);
        }
        ours.add(ids, persons, baseline.get_xb());
    }
    const std::vector<float> queries =
        random_floats(size_t{o.batch} * o.dim, kSeed + 1);

    std::vector<float> distances(size_t{o.batch} * o.k);
    std::vector<faiss::Index::idx_t> labels(size_t{o.batch} * o.k);
    const double faiss_calls = calls_per_second(
        [&] {
            baseline.search(o.batch, queries.data(), o.k, distances.data(),
                            labels.data());
        },
        o.seconds, cpu_time);
    std::vector<std::vector<index::hit>> hits;
    const double facevec_calls = calls_per_second(
        [&] { hits = ours.search_faces(queries.data(), o.batch, o.k); },
        o.seconds, cpu_time);
    const size_t f32_bytes = o.n * o.dim * sizeof(float);
    const double stream_calls = calls_per_second(
        [&] {
            volatile uint64_t sink =
                index::stream_read(baseline.get_xb(), f32_bytes, threads);
            (void)sink;
        },
        o.seconds, cpu_time);
    const auto [at1, atk] = recall(hits, labels, o.k);

    const double scanned_bytes =
        static_cast<double>(o.n) * o.dim * index::element_bytes(kind);
    nlohmann::json out = {
        {"n", o.n},
        {"dim", o.dim},
        {"batch", o.batch},
        {"k", o.k},
        {"storage", o.storage},
        {"threads", threads},
        {"isa", index::scan_isa_name(
                    index::resolve_scan_isa(index::scan_isa::automatic))},
        {"facevec_qps", facevec_calls * o.batch},
        {"faiss_qps", faiss_calls * o.batch},
        {"ratio", facevec_calls / faiss_calls},
        {"gbps", facevec_calls * scanned_bytes / kBytesPerGigabyte},
        {"stream_gbps",
         stream_calls * static_cast<double>(f32_bytes) / kBytesPerGigabyte},
        {"recall_at_1", at1},
        {"recall_at_10", atk},
        {"clock", cpu_time ? "cpu" : "wall"},
        {"load_average", load_average()},
    };
    std::printf("%s\n", out.dump().c_str());
}

}  // namespace

void register_bench_commands(CLI::App &app) {
    CLI::App *bench = app.add_subcommand("bench", "Measure facevec's speed");
    bench->require_subcommand(1);

    auto options = std::make_shared<scan_bench_options>();
    CLI::App *scan = bench->add_subcommand(
        "scan",
        "Exact search on random data: facevec's index against FAISS "
        "IndexFlatL2 and a plain memory read; prints one JSON object "
        "(recall is against FAISS's top-k)");
    scan->add_option("--n", options->n, "Gallery rows")->capture_default_str();
    scan->add_option("--dim", options->dim, "Dimensions")
        ->capture_default_str();
    scan->add_option("--batch", options->batch, "Queries per search call")
        ->capture_default_str();
    scan->add_option("--storage", options->storage,
                     "facevec's storage: f32, bf16 or fp16")
        ->capture_default_str();
    scan->add_option("--threads", options->threads,
                     "OpenMP threads (0: OMP_NUM_THREADS or all cores)")
        ->capture_default_str();
    scan->add_option("--seconds", options->seconds,
                     "Minimum time measured per contender")
        ->capture_default_str();
    scan->callback([options] { run_scan_bench(*options); });
}

}  // namespace facevec::cli
