// AVX-512 kernels (avx512f + bw + vl), compiled for that target function
// by function so the one binary still runs on CPUs without it.
//
// Register blocking: up to kQueryBlock queries x kRowBlock base rows are
// accumulated in 16 zmm registers (8 rows for 1 or 2 queries); each 16-element
// slice of a base row is loaded once and used for every query of the block.
// Each (query, row) pair always runs the same sequence of operations, so its
// distance does not depend on the block it was computed in.
#include <immintrin.h>

#include "index/scan_kernels.h"

// GCC 12 warns inside its own intrinsics (_mm512_cvtph_ps and others fill
// an "undefined" placeholder register): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define FACEVEC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// Fully unrolls the register-block loops so the accumulators stay in
// registers (GCC at -O2 keeps the arrays in memory otherwise).
#define FACEVEC_UNROLL _Pragma("GCC unroll 16")

namespace facevec::index::internal {
namespace {

constexpr size_t kLanes = 16;
constexpr int kQueryBlock = 4;
constexpr int kRowBlock = 4;
// With one or two queries a block holds more rows, so that enough
// independent FMA chains are in flight (32 zmm registers allow it).
constexpr int kWideRowBlock = 8;

constexpr int rows_per_block(int queries) {
    return queries <= 2 ? kWideRowBlock : kRowBlock;
}
constexpr int kBf16Shift = 16;

// Software prefetch distance for the gallery rows: the hardware
// prefetcher alone left a batch-1 scan at about 60% of a plain read.
constexpr size_t kPrefetchBytes = 8192;

struct f32_element {
    using type = float;
    FACEVEC_AVX512 static __m512 load(const float *p) {
        return _mm512_loadu_ps(p);
    }
    FACEVEC_AVX512 static __m512 load(const float *p, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, p);
    }
};

struct bf16_element {
    using type = uint16_t;
    FACEVEC_AVX512 static __m512 widen(__m256i h) {
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), kBf16Shift));
    }
    FACEVEC_AVX512 static __m512 load(const uint16_t *p) {
        return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
    }
    FACEVEC_AVX512 static __m512 load(const uint16_t *p, __mmask16 m) {
        return widen(_mm256_maskz_loadu_epi16(m, p));
    }
};

struct fp16_element {
    using type = uint16_t;
    FACEVEC_AVX512 static __m512 load(const uint16_t *p) {
        return _mm512_cvtph_ps(
            _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
    }
    FACEVEC_AVX512 static __m512 load(const uint16_t *p, __mmask16 m) {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    }
};

// Distances from QB queries (rows of q) to RB consecutive base rows y;
// out[qi * stride + r].
template <typename E, int QB, int RB>
FACEVEC_AVX512 inline void block(const float *q, size_t dim,
                                 const typename E::type *y, float *out,
                                 size_t stride) {
    __m512 acc[QB][RB];
    FACEVEC_UNROLL
    for (int qi = 0; qi < QB; ++qi) {
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            acc[qi][r] = _mm512_setzero_ps();
        }
    }

    const size_t full = dim - dim % kLanes;
    for (size_t d = 0; d < full; d += kLanes) {
        __m512 yv[RB];
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            yv[r] = E::load(y + r * dim + d);
            _mm_prefetch(reinterpret_cast<const char *>(y + r * dim + d) +
                             kPrefetchBytes,
                         _MM_HINT_T0);
        }
        FACEVEC_UNROLL
        for (int qi = 0; qi < QB; ++qi) {
            const __m512 xv = _mm512_loadu_ps(q + qi * dim + d);
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                const __m512 diff = _mm512_sub_ps(yv[r], xv);
                acc[qi][r] = _mm512_fmadd_ps(diff, diff, acc[qi][r]);
            }
        }
    }

    // The tail of an odd dim: masked lanes load zeros on both sides.
    if (full < dim) {
        const auto mask = static_cast<__mmask16>((1u << (dim - full)) - 1);
        __m512 yv[RB];
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            yv[r] = E::load(y + r * dim + full, mask);
        }
        FACEVEC_UNROLL
        for (int qi = 0; qi < QB; ++qi) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, q + qi * dim + full);
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                const __m512 diff = _mm512_sub_ps(yv[r], xv);
                acc[qi][r] = _mm512_fmadd_ps(diff, diff, acc[qi][r]);
            }
        }
    }

    FACEVEC_UNROLL
    for (int qi = 0; qi < QB; ++qi) {
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            out[qi * stride + r] = _mm512_reduce_add_ps(acc[qi][r]);
        }
    }
}

// QB queries against all nb rows, rows_per_block(QB) rows at a time.
template <typename E, int QB>
FACEVEC_AVX512 void all_rows(const float *q, const typename E::type *base,
                             size_t nb, size_t dim, float *out) {
    size_t r = 0;
    constexpr int kRows = rows_per_block(QB);
    for (; r + kRows <= nb; r += kRows) {
        block<E, QB, kRows>(q, dim, base + r * dim, out + r, nb);
    }
    for (; r < nb; ++r) {
        block<E, QB, 1>(q, dim, base + r * dim, out + r, nb);
    }
}

template <typename E>
FACEVEC_AVX512 void tile(const float *queries, size_t nq, const void *base,
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

tile_kernels avx512_kernels() {
    tile_kernels k;
    k.f32 = &tile<f32_element>;
    k.bf16 = &tile<bf16_element>;
    k.fp16 = &tile<fp16_element>;
    return k;
}

FACEVEC_AVX512 uint64_t stream_sum_avx512(const void *data, size_t bytes) {
    constexpr size_t kUnroll = 4;
    constexpr size_t kStep = kUnroll * sizeof(__m512i);
    const auto *p = static_cast<const char *>(data);
    __m512i acc[kUnroll];
    FACEVEC_UNROLL
    for (auto &a : acc) {
        a = _mm512_setzero_si512();
    }
    size_t i = 0;
    for (; i + kStep <= bytes; i += kStep) {
        FACEVEC_UNROLL
        for (size_t u = 0; u < kUnroll; ++u) {
            const __m512i v = _mm512_loadu_si512(p + i + u * sizeof(__m512i));
            acc[u] = _mm512_add_epi32(acc[u], v);
        }
    }
    for (; i + sizeof(__m512i) <= bytes; i += sizeof(__m512i)) {
        acc[0] = _mm512_add_epi32(acc[0], _mm512_loadu_si512(p + i));
    }
    const __m512i total = _mm512_add_epi32(_mm512_add_epi32(acc[0], acc[1]),
                                           _mm512_add_epi32(acc[2], acc[3]));
    return static_cast<uint32_t>(_mm512_reduce_add_epi32(total));
}

}  // namespace facevec::index::internal
