// The in-process baseline of bench/server_bench.sh: the same query body
// the HTTP benchmark posts, answered by engine::query directly from T
// threads for a fixed time. Prints requests/s, p50 and p99 in the form
// the script parses. With IMAGE (the photo the body carries in base64),
// each request is that photo embedded by face_pipeline::process_bytes
// (every face) and each face queried, as POST /v1/query with images does.
//
// Not a Google Benchmark program: the figures compared with wrk's are
// per-request latency percentiles at a fixed concurrency, which Google
// Benchmark's timers do not report.
//
//   server_bench DB BODY.json THREADS SECONDS [IMAGE]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/engine.h"
#include "api/faces.h"

namespace {

using clock_type = std::chrono::steady_clock;

constexpr int kArgs = 5;
constexpr int kArgsWithImage = 6;
constexpr double kP50 = 0.50;
constexpr double kP99 = 0.99;
constexpr double kMillisPerSecond = 1000.0;

double percentile(std::vector<double> &sorted, double q) {
    if (sorted.empty())
        return 0;
    size_t at = static_cast<size_t>(q * static_cast<double>(sorted.size()));
    return sorted[std::min(at, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != kArgs && argc != kArgsWithImage) {
        std::fprintf(stderr,
                     "usage: server_bench DB BODY.json THREADS SECONDS "
                     "[IMAGE]\n");
        return 2;
    }
    const std::string db_path = argv[1];
    const int threads = std::atoi(argv[3]);
    const double seconds = std::atof(argv[4]);

    // The query body wrk posts: {"vectors": [[...]], "k": K} or
    // {"images": ["base64"], "k": K}.
    std::ifstream in(argv[2]);
    nlohmann::json body = nlohmann::json::parse(in, nullptr, false);
    const bool images = argc == kArgsWithImage;
    if (body.is_discarded() || !body.contains(images ? "images" : "vectors")) {
        std::fprintf(stderr, "server_bench: %s is not a query body\n", argv[2]);
        return 1;
    }
    std::vector<float> query;
    if (!images)
        query = body["vectors"][0].get<std::vector<float>>();
    const int k = body.value("k", 1);

    auto db = facevec::engine::open(db_path, facevec::engine_options{});
    if (!db) {
        std::fprintf(stderr, "server_bench: %s\n",
                     db.error().to_string().c_str());
        return 1;
    }

    // The photo and the database's model (face-resnet's defaults).
    std::vector<uint8_t> photo;
    std::unique_ptr<facevec::face_pipeline> pipeline;
    if (images) {
        std::ifstream file(argv[kArgs], std::ios::binary);
        photo.assign(std::istreambuf_iterator<char>(file),
                     std::istreambuf_iterator<char>());
        auto p = facevec::face_pipeline::create({});
        if (!p) {
            std::fprintf(stderr, "server_bench: %s\n",
                         p.error().to_string().c_str());
            return 1;
        }
        pipeline = std::move(*p);
    }
    // One request: the vector, or the photo's faces, queried.
    auto request = [&]() -> bool {
        if (!images)
            return (*db)->query(query.data(), 1, k).is_ok();
        facevec::photo_bytes item{"photo", photo};
        auto res =
            pipeline->process_bytes({&item, 1}, facevec::face_policy::all);
        if (!res[0].error.is_ok())
            return false;
        for (const auto &f : res[0].faces) {
            if (!(*db)->query(f.embedding.data(), 1, k))
                return false;
        }
        return true;
    };

    std::vector<std::vector<double>> latencies(threads);
    std::atomic<int> failures{0};
    clock_type::time_point end =
        clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                std::chrono::duration<double>(seconds));
    clock_type::time_point start = clock_type::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            while (clock_type::now() < end) {
                clock_type::time_point t0 = clock_type::now();
                if (!request())
                    ++failures;
                latencies[t].push_back(
                    std::chrono::duration<double>(clock_type::now() - t0)
                        .count());
            }
        });
    }
    for (std::thread &t : pool)
        t.join();
    double elapsed =
        std::chrono::duration<double>(clock_type::now() - start).count();

    std::vector<double> all;
    for (const auto &l : latencies)
        all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    std::printf("inproc: rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
                static_cast<double>(all.size()) / elapsed,
                percentile(all, kP50) * kMillisPerSecond,
                percentile(all, kP99) * kMillisPerSecond, failures.load());
    return failures == 0 ? 0 : 1;
}
