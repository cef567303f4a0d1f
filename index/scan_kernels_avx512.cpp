// AVX-512 kernels (avx512f + bw + vl), compiled for that target function
// by function so the one binary still runs on CPUs without it.
//
// Register blocking: QB queries x RB base rows are accumulated in 8 or 16
// zmm registers; each 16-element slice of a base row is loaded once and
// used for every query of the block. The block's sums are then reduced
// together (reduce_many), with the lane order of _mm512_reduce_add_ps, and
// a short block at the end of the rows repeats its last row, so each
// (query, row) pair always runs the same sequence of operations: its
// distance does not depend on the block it was computed in.
#include <immintrin.h>

#include <algorithm>

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

// Rows per block: 4 for 3-4 queries (16 accumulators); 8 for 1-2 queries,
// so that enough independent FMA chains are in flight; 16 for one query
// over short rows, so a block spans whole pages of the gallery.
constexpr int kRowBlock = 4;
constexpr int kWideRowBlock = 8;
constexpr int kShortRowBlock = 16;

// Software prefetch, kPrefetchBytes ahead rounded up to whole blocks.
// Blocks of several queries run long enough per row that the hardware
// prefetcher alone falls behind: they always prefetch. One query over
// "short" rows (at most kShortRowBytes: too few cache lines each for the
// hardware prefetcher to follow when a block reads rows side by side)
// prefetches too, over longer rows it does better without. Measured on
// 1M rows, 1 thread, CPU time against a plain read of the same bytes, under
// load 6-9: batch 1, dim 128 (512-byte rows): 16-row blocks with prefetch
// 0.84-0.87 of the read, 8-row blocks 0.73-0.78 with or without; batch 1,
// dim 512 (2 KiB rows): 8-row blocks without prefetch 0.82-0.87, with
// 0.73-0.79; batch 4, dim 512: 128 ms per call without prefetch, 86 ms
// with 8 KiB, 92 ms with 16 KiB.
constexpr size_t kShortRowBytes = 1024;
constexpr size_t kPrefetchBytes = 8192;
constexpr size_t kCacheLine = 64;

constexpr int kBf16Shift = 16;

struct f32_element {
    using type = float;
    FACEVEC_AVX512 static __m512 load(const float *p) {
        return _mm512_loadu_ps(p);
    }
    FACEVEC_AVX512 static __m512 load(const float *p, __mmask16 m) {
        return _mm512_maskz_loadu_ps(m, p);
    }
};

// bf16 widens by a shift (2 instructions per 16 elements, hidden behind
// the memory reads). AVX-512 BF16's dot product (vdpbf16ps) is not used:
// it takes both sides in bf16, and rounding the query would change the
// distances the re-ranking bound assumes (exact to the rounded rows).
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

// Horizontal sums of N accumulators at once (N = 8 or 16): lane i of the
// result is the sum of the 16 lanes of acc[i]. The lanes are folded in
// halves (+8, +4, +2, +1), the order _mm512_reduce_add_ps uses, so every
// sum is bit-identical to reducing its accumulator alone.
// Shuffle selectors. _mm512_shuffle_f32x4(a, b, imm) picks 128-bit lanes:
// [a.0 a.1 b.0 b.1], [a.2 a.3 b.2 b.3], [a.0 a.2 b.0 b.2], [a.1 a.3 b.1 b.3].
constexpr int kLow256 = 0x44;
constexpr int kHigh256 = 0xEE;
constexpr int kEven128 = 0x88;
constexpr int kOdd128 = 0xDD;
// _mm512_shuffle_ps(a, b, imm) picks floats within each 128-bit lane:
// [a0 a1 b0 b1], [a2 a3 b2 b3], [a0 a2 b0 b2], [a1 a3 b1 b3].
constexpr int kLowPairs = 0x44;
constexpr int kHighPairs = 0xEE;
constexpr int kEvenFloats = 0x88;
constexpr int kOddFloats = 0xDD;

template <int N>
FACEVEC_AVX512 inline __m512 reduce_many(const __m512 *acc) {
    static_assert(N == 8 || N == 16, "reduce_many: 8 or 16 accumulators");
    // Level 1: lanes i and i + 8 of two accumulators.
    __m512 v1[N / 2];
    FACEVEC_UNROLL
    for (int j = 0; j < N / 2; ++j) {
        const __m512 a = acc[2 * j];
        const __m512 b = acc[2 * j + 1];
        v1[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, kLow256),
                              _mm512_shuffle_f32x4(a, b, kHigh256));
    }
    // Level 2: + 4. Each 128-bit lane now holds one accumulator.
    __m512 v2[N / 4];
    FACEVEC_UNROLL
    for (int j = 0; j < N / 4; ++j) {
        const __m512 a = v1[2 * j];
        const __m512 b = v1[2 * j + 1];
        v2[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, kEven128),
                              _mm512_shuffle_f32x4(a, b, kOdd128));
    }
    // Level 3: + 2, two accumulators per 128-bit lane.
    __m512 v3[2];
    if constexpr (N == 16) {
        FACEVEC_UNROLL
        for (int j = 0; j < 2; ++j) {
            v3[j] = _mm512_add_ps(
                _mm512_shuffle_ps(v2[2 * j], v2[2 * j + 1], kLowPairs),
                _mm512_shuffle_ps(v2[2 * j], v2[2 * j + 1], kHighPairs));
        }
    } else {
        v3[0] = _mm512_add_ps(_mm512_shuffle_ps(v2[0], v2[1], kLowPairs),
                              _mm512_shuffle_ps(v2[0], v2[1], kHighPairs));
        v3[1] = v3[0];
    }
    // Level 4: + 1. Lane 4k + m holds accumulator 4m + k.
    const __m512 v4 =
        _mm512_add_ps(_mm512_shuffle_ps(v3[0], v3[1], kEvenFloats),
                      _mm512_shuffle_ps(v3[0], v3[1], kOddFloats));
    const __m512i order =
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, v4);
}

// Distances from QB queries (rows of q) to RB consecutive base rows
// y[0 .. rows) (rows <= RB; a short block repeats its last row and drops
// the copies); out[qi * stride + r]. Rows prefetch_bytes ahead are
// prefetched (0: none).
template <typename E, int QB, int RB>
FACEVEC_AVX512 inline void block(const float *q, size_t dim,
                                 const typename E::type *y, size_t rows,
                                 float *out, size_t stride,
                                 size_t prefetch_bytes) {
    constexpr int kAcc = QB * RB <= 8 ? 8 : 16;
    static_assert(QB * RB <= kAcc, "block: too many accumulators");
    const typename E::type *row[RB];
    FACEVEC_UNROLL
    for (int r = 0; r < RB; ++r) {
        row[r] = y + std::min<size_t>(r, rows - 1) * dim;
    }
    __m512 acc[kAcc];
    FACEVEC_UNROLL
    for (int i = 0; i < kAcc; ++i) {
        acc[i] = _mm512_setzero_ps();
    }

    const size_t full = dim - dim % kLanes;
    for (size_t d = 0; d < full; d += kLanes) {
        __m512 yv[RB];
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            yv[r] = E::load(row[r] + d);
        }
        // One prefetch per cache line: every other slice of 2-byte rows.
        const bool line_start =
            (d * sizeof(typename E::type)) % kCacheLine == 0;
        if (prefetch_bytes != 0 && line_start) {
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                _mm_prefetch(
                    reinterpret_cast<const char *>(row[r] + d) + prefetch_bytes,
                    _MM_HINT_T0);
            }
        }
        FACEVEC_UNROLL
        for (int qi = 0; qi < QB; ++qi) {
            const __m512 xv = _mm512_loadu_ps(q + qi * dim + d);
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                const __m512 diff = _mm512_sub_ps(yv[r], xv);
                acc[qi * RB + r] =
                    _mm512_fmadd_ps(diff, diff, acc[qi * RB + r]);
            }
        }
    }

    // The tail of an odd dim: masked lanes load zeros on both sides.
    if (full < dim) {
        const auto mask = static_cast<__mmask16>((1u << (dim - full)) - 1);
        __m512 yv[RB];
        FACEVEC_UNROLL
        for (int r = 0; r < RB; ++r) {
            yv[r] = E::load(row[r] + full, mask);
        }
        FACEVEC_UNROLL
        for (int qi = 0; qi < QB; ++qi) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, q + qi * dim + full);
            FACEVEC_UNROLL
            for (int r = 0; r < RB; ++r) {
                const __m512 diff = _mm512_sub_ps(yv[r], xv);
                acc[qi * RB + r] =
                    _mm512_fmadd_ps(diff, diff, acc[qi * RB + r]);
            }
        }
    }

    // Lane qi * RB + r of sums is the distance of (qi, r).
    // Twice the lanes: the masked loads below read past lane 15 unused.
    alignas(__m512) float sums[2 * kLanes] = {};
    _mm512_store_ps(sums, reduce_many<kAcc>(acc));
    const auto keep =
        static_cast<__mmask16>((1u << std::min<size_t>(rows, RB)) - 1);
    FACEVEC_UNROLL
    for (int qi = 0; qi < QB; ++qi) {
        const __m512 s = _mm512_maskz_loadu_ps(keep, sums + qi * RB);
        _mm512_mask_storeu_ps(out + qi * stride, keep, s);
    }
}

// QB queries against all nb rows, RB rows at a time, prefetching
// prefetch_bytes ahead (0: none).
template <typename E, int QB, int RB>
FACEVEC_AVX512 void all_rows(const float *q, const typename E::type *base,
                             size_t nb, size_t dim, float *out,
                             size_t prefetch_bytes) {
    for (size_t r = 0; r < nb; r += RB) {
        block<E, QB, RB>(q, dim, base + r * dim, std::min<size_t>(RB, nb - r),
                         out + r, nb, prefetch_bytes);
    }
}

// The prefetch distance for blocks of `rows` rows: kPrefetchBytes rounded
// up to whole blocks, so each row prefetches the same row of a later block.
size_t prefetch_distance(size_t row_bytes, size_t rows) {
    const size_t block_bytes = row_bytes * rows;
    return (kPrefetchBytes + block_bytes - 1) / block_bytes * block_bytes;
}

template <typename E>
FACEVEC_AVX512 void tile(const float *queries, size_t nq, const void *base,
                         size_t nb, size_t dim, float *out) {
    const auto *rows = static_cast<const typename E::type *>(base);
    const size_t row_bytes = dim * sizeof(typename E::type);
    const bool short_rows = row_bytes <= kShortRowBytes;
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const float *q = queries + q0 * dim;
        float *o = out + q0 * nb;
        switch (nq - q0) {
            case 1:
                if (short_rows) {
                    all_rows<E, 1, kShortRowBlock>(
                        q, rows, nb, dim, o,
                        prefetch_distance(row_bytes, kShortRowBlock));
                } else {
                    all_rows<E, 1, kWideRowBlock>(q, rows, nb, dim, o, 0);
                }
                break;
            case 2:
                all_rows<E, 2, kWideRowBlock>(
                    q, rows, nb, dim, o,
                    prefetch_distance(row_bytes, kWideRowBlock));
                break;
            case 3:
                all_rows<E, 3, kRowBlock>(
                    q, rows, nb, dim, o,
                    prefetch_distance(row_bytes, kRowBlock));
                break;
            default:
                all_rows<E, kQueryBlock, kRowBlock>(
                    q, rows, nb, dim, o,
                    prefetch_distance(row_bytes, kRowBlock));
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
