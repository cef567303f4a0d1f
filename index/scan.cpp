#include "index/scan.h"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "index/scan_kernels.h"

namespace facevec::index {
namespace {

constexpr const char *kScanEnv = "FACEVEC_SCAN";

// Base rows are scanned in tiles of about this many bytes: small enough to
// stay in the 1 MiB L2 cache while every query block passes over them, so
// a batch reads the gallery from memory once.
constexpr size_t kTileBytes = 128 * 1024;
constexpr size_t kMinTileRows = 16;

// Threads take the gallery in chunks of at most kChunkBytes (handing one
// out then costs nothing), and at least kChunksPerThread chunks each, so
// that neither waits long for the other.
constexpr size_t kChunkBytes = 4u << 20;
constexpr size_t kChunksPerThread = 4;

// The streaming read's vector loops consume whole blocks of this size.
constexpr size_t kStreamBlock = 256;

// Galleries smaller than this are scanned on one thread. Measured (batch
// 1, f32, wall time, median of 41 calls, the second thread already
// awake), 2 threads over 1 thread: dim 512: 512 KiB 0.84-0.90, 1 MiB
// 1.27-1.30, 2 MiB 1.40, 4 MiB 1.39-1.57; dim 128: 512 KiB 0.94-0.95,
// 1 MiB 1.21-1.33, 2 MiB 1.45-1.54. So splitting pays from about 1 MiB;
// 2 MiB keeps a margin. Limitation: this holds only when the second core
// is free. Under load 10-12 on the 2 cores (other builds running), a
// second thread that had to be woken cost 20-45 ms whatever the size, and
// a 256 MiB gallery ran 0.73-0.87x as fast on 2 threads: on a busy machine
// callers should search with one thread (flat_index::set_threads(1)).
constexpr size_t kParallelMinBytes = 2u << 20;

// CPUID leaf 1, ECX bit 29: half-precision conversions (F16C).
constexpr unsigned kCpuidFeatures = 1;
constexpr unsigned kF16cBit = 1u << 29;

bool cpu_has_f16c() {
    unsigned eax = 0;
    unsigned ebx = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    if (__get_cpuid(kCpuidFeatures, &eax, &ebx, &ecx, &edx) == 0) {
        return false;
    }
    return (ecx & kF16cBit) != 0;
}

scan_isa best_supported() {
    static const scan_isa kBest = [] {
        if (scan_isa_supported(scan_isa::avx512)) {
            return scan_isa::avx512;
        }
        if (scan_isa_supported(scan_isa::avx2)) {
            return scan_isa::avx2;
        }
        return scan_isa::scalar;
    }();
    return kBest;
}

const internal::tile_kernels &kernels_for(scan_isa isa) {
    static const internal::tile_kernels kScalar = internal::scalar_kernels();
    static const internal::tile_kernels kAvx2 = internal::avx2_kernels();
    static const internal::tile_kernels kAvx512 = internal::avx512_kernels();
    switch (isa) {
        case scan_isa::avx512:
            return kAvx512;
        case scan_isa::avx2:
            return kAvx2;
        default:
            return kScalar;
    }
}

internal::l2_tile_fn kernel_for(scan_isa isa, storage_kind kind) {
    const internal::tile_kernels &k = kernels_for(isa);
    switch (kind) {
        case storage_kind::bf16:
            return k.bf16;
        case storage_kind::fp16:
            return k.fp16;
        default:
            return k.f32;
    }
}

int effective_threads(int requested) {
    return requested > 0 ? requested : omp_get_max_threads();
}

// One scan answer: a distance and the row it came from. Ordered by
// distance, then position, the tie rule FAISS's heaps follow.
struct candidate {
    float distance;
    int64_t position;
    bool operator<(const candidate &o) const {
        return distance < o.distance ||
               (distance == o.distance && position < o.position);
    }
};

// The k smallest candidates seen, as a max-heap. Rows must arrive in
// increasing position, so a later row only enters with a strictly smaller
// distance than the current worst.
class top_k {
  public:
    explicit top_k(size_t k) : k_(k) { heap_.reserve(k); }

    float threshold() const {
        return heap_.size() < k_ ? std::numeric_limits<float>::infinity()
                                 : heap_.front().distance;
    }

    // REQUIRES: distance < threshold(), or the heap is not full.
    void push(float distance, int64_t position) {
        if (heap_.size() == k_) {
            std::pop_heap(heap_.begin(), heap_.end());
            heap_.pop_back();
        }
        heap_.push_back({distance, position});
        std::push_heap(heap_.begin(), heap_.end());
    }

    const std::vector<candidate> &items() const { return heap_; }

  private:
    size_t k_;
    std::vector<candidate> heap_;
};

// Scans rows [begin, end) of base for every query, tile by tile.
void scan_range(const float *queries, size_t nq, const char *base,
                size_t row_bytes, size_t begin, size_t end, size_t dim,
                internal::l2_tile_fn kernel, std::vector<top_k> &heaps) {
    const size_t tile_rows = std::max(kMinTileRows, kTileBytes / row_bytes);
    std::vector<float> dist(nq * tile_rows);
    for (size_t t = begin; t < end; t += tile_rows) {
        const size_t nt = std::min(tile_rows, end - t);
        kernel(queries, nq, base + t * row_bytes, nt, dim, dist.data());
        for (size_t q = 0; q < nq; ++q) {
            top_k &heap = heaps[q];
            float threshold = heap.threshold();
            const float *row = dist.data() + q * nt;
            for (size_t r = 0; r < nt; ++r) {
                if (row[r] < threshold) {
                    heap.push(row[r], static_cast<int64_t>(t + r));
                    threshold = heap.threshold();
                }
            }
        }
    }
}

// Writes the k best of `all` (any order) as FAISS lays out one result row.
void write_row(std::vector<candidate> &all, size_t k, float *distances,
               int64_t *labels) {
    const size_t kept = std::min(k, all.size());
    std::partial_sort(all.begin(), all.begin() + kept, all.end());
    for (size_t i = 0; i < k; ++i) {
        distances[i] =
            i < kept ? all[i].distance : std::numeric_limits<float>::infinity();
        labels[i] = i < kept ? all[i].position : -1;
    }
}

}  // namespace

const char *scan_isa_name(scan_isa isa) {
    switch (isa) {
        case scan_isa::scalar:
            return "scalar";
        case scan_isa::avx2:
            return "avx2";
        case scan_isa::avx512:
            return "avx512";
        default:
            return "automatic";
    }
}

bool parse_scan_isa(const std::string &name, scan_isa *isa) {
    for (scan_isa v : {scan_isa::automatic, scan_isa::scalar, scan_isa::avx2,
                       scan_isa::avx512}) {
        if (name == scan_isa_name(v)) {
            *isa = v;
            return true;
        }
    }
    return false;
}

bool scan_isa_supported(scan_isa isa) {
    switch (isa) {
        case scan_isa::avx512:
            return __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl");
        case scan_isa::avx2:
            return __builtin_cpu_supports("avx2") &&
                   __builtin_cpu_supports("fma") && cpu_has_f16c();
        default:
            return true;
    }
}

scan_isa resolve_scan_isa(scan_isa requested) {
    scan_isa isa = requested;
    if (isa == scan_isa::automatic) {
        const char *env = std::getenv(kScanEnv);
        if (env != nullptr && *env != '\0' && !parse_scan_isa(env, &isa)) {
            logger()->warn("{}={}: not scalar, avx2 or avx512; ignored",
                           kScanEnv, env);
        }
    }
    if (isa == scan_isa::automatic) {
        return best_supported();
    }
    if (!scan_isa_supported(isa)) {
        logger()->warn("scan: this CPU cannot run {}; using {}",
                       scan_isa_name(isa), scan_isa_name(best_supported()));
        return best_supported();
    }
    return isa;
}

void scan_knn(const float *queries, size_t nq, const void *base,
              storage_kind kind, size_t nb, size_t dim, size_t k,
              float *distances, int64_t *labels, const scan_options &options) {
    FACEVEC_ASSERT(dim >= 1 && k >= 1, "scan_knn: dim and k must be >= 1");
    if (nq == 0) {
        return;
    }
    const internal::l2_tile_fn kernel =
        kernel_for(resolve_scan_isa(options.isa), kind);
    const size_t row_bytes = dim * element_bytes(kind);
    const auto *rows = static_cast<const char *>(base);

    // Threads take chunks of the gallery in turn (a thread the OS has
    // descheduled does not hold the others up); each keeps its own heaps
    // and sees its chunks in increasing row order.
    const int wanted = effective_threads(options.threads);
    const int threads =
        nb * row_bytes >= kParallelMinBytes ? std::max(wanted, 1) : 1;
    // Each thread gets several chunks, so neither waits long for the other.
    const size_t chunk_bytes = std::min(
        kChunkBytes,
        nb * row_bytes / (static_cast<size_t>(threads) * kChunksPerThread));
    const size_t chunk_rows =
        std::max<size_t>(kMinTileRows, chunk_bytes / row_bytes);
    const size_t chunks = (nb + chunk_rows - 1) / chunk_rows;
    std::vector<std::vector<top_k>> heaps(threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        auto &mine = heaps[static_cast<size_t>(omp_get_thread_num())];
        mine.assign(nq, top_k(k));
#pragma omp for schedule(dynamic, 1)
        for (size_t c = 0; c < chunks; ++c) {
            const size_t begin = c * chunk_rows;
            scan_range(queries, nq, rows, row_bytes, begin,
                       std::min(nb, begin + chunk_rows), dim, kernel, mine);
        }
    }

    // Merge the per-thread heaps of each query.
    std::vector<candidate> all;
    for (size_t q = 0; q < nq; ++q) {
        all.clear();
        for (const auto &per_thread : heaps) {
            if (!per_thread.empty()) {
                const auto &items = per_thread[q].items();
                all.insert(all.end(), items.begin(), items.end());
            }
        }
        write_row(all, k, distances + q * k, labels + q * k);
    }
}

double exact_l2(const float *a, const float *b, size_t dim) {
    double sum = 0;
    for (size_t d = 0; d < dim; ++d) {
        const double diff = static_cast<double>(a[d]) - b[d];
        sum += diff * diff;
    }
    return sum;
}

uint16_t encode_half(float value, storage_kind kind) {
    FACEVEC_ASSERT(kind != storage_kind::f32, "encode_half: f32 given");
    uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t magnitude = u & 0x7FFFFFFFu;
    constexpr uint32_t kFloatInf = 0x7F800000u;

    if (kind == storage_kind::bf16) {
        constexpr uint32_t kQuietNan = 0x7FC0u;
        if (magnitude > kFloatInf) {
            return static_cast<uint16_t>(sign | kQuietNan);
        }
        const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
        return static_cast<uint16_t>(rounded >> 16);
    }

    // fp16: 5 exponent bits (bias 15), 10 mantissa bits.
    constexpr uint32_t kHalfInf = 0x7C00u;
    constexpr uint32_t kHalfQuietNan = 0x7E00u;
    constexpr uint32_t kRoundsToInf = 0x477FF000u;        // 65520.0f
    constexpr uint32_t kSmallestNormal = 0x38800000u;     // 2^-14
    constexpr uint32_t kHalfOfSmallestSub = 0x33000000u;  // 2^-25
    constexpr uint32_t kRebias = (127u - 15u) << 23;
    constexpr uint32_t kDroppedBits = 13;
    if (magnitude > kFloatInf) {
        return static_cast<uint16_t>(sign | kHalfQuietNan);
    }
    if (magnitude >= kRoundsToInf) {
        return static_cast<uint16_t>(sign | kHalfInf);
    }
    uint32_t half;
    uint32_t rest;
    uint32_t halfway;
    if (magnitude >= kSmallestNormal) {
        const uint32_t v = magnitude - kRebias;
        half = v >> kDroppedBits;
        rest = v & ((1u << kDroppedBits) - 1);
        halfway = 1u << (kDroppedBits - 1);
    } else if (magnitude <= kHalfOfSmallestSub) {
        return static_cast<uint16_t>(sign);
    } else {
        // Subnormal: the value in units of 2^-24 is m * 2^(e - 126).
        const uint32_t exponent = magnitude >> 23;
        const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - exponent;
        half = mantissa >> shift;
        rest = mantissa & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
    }
    if (rest > halfway || (rest == halfway && (half & 1u) != 0)) {
        ++half;
    }
    return static_cast<uint16_t>(sign | half);
}

float decode_half(uint16_t bits, storage_kind kind) {
    FACEVEC_ASSERT(kind != storage_kind::f32, "decode_half: f32 given");
    return kind == storage_kind::bf16 ? internal::bf16_to_float(bits)
                                      : internal::fp16_to_float(bits);
}

void encode_half(const float *src, size_t n, storage_kind kind, uint16_t *dst) {
    for (size_t i = 0; i < n; ++i) {
        dst[i] = encode_half(src[i], kind);
    }
}

size_t element_bytes(storage_kind kind) {
    return kind == storage_kind::f32 ? sizeof(float) : sizeof(uint16_t);
}

uint64_t stream_read(const void *data, size_t bytes, int threads) {
    const scan_isa isa = resolve_scan_isa(scan_isa::automatic);
    const int n_threads = std::max(effective_threads(threads), 1);
    const auto *p = static_cast<const char *>(data);
    uint64_t total = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
    {
        const auto t = static_cast<size_t>(omp_get_thread_num());
        const size_t n = static_cast<size_t>(omp_get_num_threads());
        const size_t begin =
            bytes * t / n / sizeof(uint64_t) * sizeof(uint64_t);
        const size_t end =
            bytes * (t + 1) / n / sizeof(uint64_t) * sizeof(uint64_t);
        // Whole vector blocks on the fast path, the rest word by word.
        const size_t vector_end =
            begin + (end - begin) / kStreamBlock * kStreamBlock;
        switch (isa) {
            case scan_isa::avx512:
                total +=
                    internal::stream_sum_avx512(p + begin, vector_end - begin);
                break;
            case scan_isa::avx2:
                total +=
                    internal::stream_sum_avx2(p + begin, vector_end - begin);
                break;
            default:
                total +=
                    internal::stream_sum_scalar(p + begin, vector_end - begin);
                break;
        }
        total += internal::stream_sum_scalar(p + vector_end, end - vector_end);
    }
    return total;
}

}  // namespace facevec::index
