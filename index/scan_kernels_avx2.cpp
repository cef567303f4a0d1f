// AVX2 kernels (avx2 + fma + f16c), compiled for that target function by
// function so the one binary still runs on CPUs without it.
//
// Same blocking as the AVX-512 kernels with 8 lanes: kQueryBlock queries x
// kRowBlock rows in 8 ymm accumulators (AVX2 has 16 registers). The tail
// of an odd dim is summed in scalar code.
#include <immintrin.h>

#include "index/scan_kernels.h"

#define FACEVEC_AVX2 __attribute__((target("avx2,fma,f16c")))

// Fully unrolls the register-block loops so the accumulators stay in
// registers (GCC at -O2 keeps the arrays in memory otherwise).
#define FACEVEC_UNROLL _Pragma("GCC unroll 16")

namespace facevec::index::internal {
namespace {

constexpr size_t kLanes = 8;
constexpr int kQueryBlock = 4;
constexpr int kRowBlock = 2;
constexpr int kBf16Shift = 16;

// Software prefetch distance for the gallery rows, as in the AVX-512
// kernels.
constexpr size_t kPrefetchBytes = 8192;

struct f32_element {
    using type = float;
    FACEVEC_AVX2 static __m256 load(const float *p) {
        return _mm256_loadu_ps(p);
    }
    static float decode(float v) { return v; }
};

struct bf16_element {
    using type = uint16_t;
    FACEVEC_AVX2 static __m256 load(const uint16_t *p) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), kBf16Shift));
    }
    static float decode(uint16_t v) { return bf16_to_float(v); }
};

struct fp16_element {
    using type = uint16_t;
    FACEVEC_AVX2 static __m256 load(const uint16_t *p) {
        return _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    }
    static float decode(uint16_t v) { return fp16_to_float(v); }
};

FACEVEC_AVX2 inline float horizontal_sum(__m256 v) {
    __m128 s =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Distances from QB queries (rows of q) to RB consecutive base rows y;
// out[qi * stride + r].
template <typename E, int QB, int RB>
FACEVEC_AVX2 inline void block(const float *q, size_t dim,
                               const typename E::type *y, float *out,
                               size_t stride) {
    __m256 acc[QB][RB];
    FACEVEC_UNROLL
    for (int qi = 0; qi < QB; ++qi) {
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            acc[qi][r] = _mm256_setzero_ps();
        }
    }

    const size_t full = dim - dim % kLanes;
    for (size_t d = 0; d < full; d += kLanes) {
        __m256 yv[RB];
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            yv[r] = E::load(y + r * dim + d);
            _mm_prefetch(reinterpret_cast<const char *>(y + r * dim + d) +
                             kPrefetchBytes,
                         _MM_HINT_T0);
        }
        FACEVEC_UNROLL
        for (int qi = 0; qi < QB; ++qi) {
            const __m256 xv = _mm256_loadu_ps(q + qi * dim + d);
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                const __m256 diff = _mm256_sub_ps(yv[r], xv);
                acc[qi][r] = _mm256_fmadd_ps(diff, diff, acc[qi][r]);
            }
        }
    }

    FACEVEC_UNROLL
    for (int qi = 0; qi < QB; ++qi) {
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            float tail = 0;
            for (size_t d = full; d < dim; ++d) {
                const float diff = E::decode(y[r * dim + d]) - q[qi * dim + d];
                tail += diff * diff;
            }
            out[qi * stride + r] = horizontal_sum(acc[qi][r]) + tail;
        }
    }
}

// QB queries against all nb rows, kRowBlock rows at a time.
template <typename E, int QB>
FACEVEC_AVX2 void all_rows(const float *q, const typename E::type *base,
                           size_t nb, size_t dim, float *out) {
    size_t r = 0;
    for (; r + kRowBlock <= nb; r += kRowBlock) {
        block<E, QB, kRowBlock>(q, dim, base + r * dim, out + r, nb);
    }
    for (; r < nb; ++r) {
        block<E, QB, 1>(q, dim, base + r * dim, out + r, nb);
    }
}

template <typename E>
FACEVEC_AVX2 void tile(const float *queries, size_t nq, const void *base,
                       size_t nb, size_t dim, float *out) {
    const auto *rows = static_cast<const typename E::type *>(base);
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const float *q = queries + q0 * dim;
        float *o = out + q0 * nb;
        switch (nq - q0) {
            case 1:
                all_rows<E, 1>(q, rows, nb, dim, o);
                break;
            case 2:
                all_rows<E, 2>(q, rows, nb, dim, o);
                break;
            case 3:
                all_rows<E, 3>(q, rows, nb, dim, o);
                break;
            default:
                all_rows<E, kQueryBlock>(q, rows, nb, dim, o);
                break;
        }
    }
}

}  // namespace

tile_kernels avx2_kernels() {
    tile_kernels k;
    k.f32 = &tile<f32_element>;
    k.bf16 = &tile<bf16_element>;
    k.fp16 = &tile<fp16_element>;
    return k;
}

FACEVEC_AVX2 uint64_t stream_sum_avx2(const void *data, size_t bytes) {
    constexpr size_t kUnroll = 4;
    constexpr size_t kStep = kUnroll * sizeof(__m256i);
    const auto *p = static_cast<const char *>(data);
    __m256i acc[kUnroll];
    FACEVEC_UNROLL
    for (auto &a : acc) {
        a = _mm256_setzero_si256();
    }
    size_t i = 0;
    for (; i + kStep <= bytes; i += kStep) {
        FACEVEC_UNROLL
        for (size_t u = 0; u < kUnroll; ++u) {
            const __m256i v = _mm256_loadu_si256(
                reinterpret_cast<const __m256i *>(p + i + u * sizeof(__m256i)));
            acc[u] = _mm256_add_epi32(acc[u], v);
        }
    }
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(acc[0], acc[1]),
                                           _mm256_add_epi32(acc[2], acc[3]));
    alignas(sizeof(__m256i)) uint32_t lanes[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), total);
    uint64_t sum = 0;
    for (uint32_t lane : lanes) {
        sum += lane;
    }
    return sum;
}

}  // namespace facevec::index::internal
