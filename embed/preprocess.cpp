#include "embed/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>

#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace facevec::embed {
namespace {

// Four floats in one SIMD register (SSE on x86-64, NEON on ARM; GCC and
// clang lower it to scalar code elsewhere): the R, G, B of one pixel and
// an unused lane.
using f32x4 = float __attribute__((vector_size(16)));

constexpr int kChannels = 3;
constexpr int kLanes = 4;  // floats in an f32x4
// Bytes the vertical pass reads per step (one SSE2 register, or widened
// to int16 for one AVX2 register).
constexpr int kStepBytes = 16;
// Fixed-point weights of the vertical pass: 1.0 is 2^14, so a weight fits
// an int16 and a sum of 255 * kWeightOne fits an int32.
constexpr int kWeightBits = 14;
constexpr int32_t kWeightOne = 1 << kWeightBits;
constexpr int kHalfBits = 16;
// The vertical pass keeps kFractionBits bits below the 0..255 unit in
// int16 (255 << 7 fits); the horizontal pass then sums those times
// kWeightBits weights exactly in int32, so its sums are in units of
// 2^-(kFractionBits + kWeightBits).
constexpr int kFractionBits = 7;
constexpr int kColumnShift = kWeightBits - kFractionBits;
constexpr int32_t kColumnRound = 1 << (kColumnShift - 1);
constexpr float kInverseRowOne = 1.0F / (1 << (kFractionBits + kWeightBits));
// int16 the AVX-512 horizontal kernel reads per group of outputs (two
// registers of 32).
constexpr int kWindowWords = 64;
// int16 of padding after a vertical pass row: the AVX2 horizontal
// kernels load 8 int16 from every tap pair's pixels, up to one pixel past
// the row; the AVX-512 one a window of kWindowWords from a group's first
// tap.
constexpr int kColumnPadding = kWindowWords;
constexpr size_t kCacheLine = 64;  // bytes
// Filters kept per thread: one per axis, for a few image sizes at once.
constexpr size_t kTapCacheEntries = 8;
// Outputs of the horizontal SIMD kernels per step (a group): four AVX2
// registers of two, or two AVX-512 registers of planes.
constexpr int kGroupOutputs = 8;
constexpr int kGroupRegisters = kGroupOutputs / 2;

// One tap pair of a group of kGroupOutputs outputs, as the AVX-512
// planar kernel reads it (see filter_taps), one cache line per register:
// `rg` picks from a window, for int32 lane L, the two taps of channel L /
// 8 of output L % 8; `b` the same for channel 2 (lanes 8-15 repeat 0-7);
// `weights` holds output L % 8's pair in lane L.
struct alignas(kCacheLine) window_pair {
    std::array<int16_t, kWindowWords / 2> rg;
    std::array<int16_t, kWindowWords / 2> b;
    std::array<int32_t, 2 * kGroupOutputs> weights;
};

// Filter weights of a 1-D resampling from `in_size` samples to `out_size`
// samples: output i reads the `taps` inputs from first[i] (relative to
// the start of the region) with weights weights[i * taps + k]. Every
// output has the same number of taps (zero weights where its filter ends
// early), so the inner loops have a fixed length; `taps` is the longest
// run of non-zero weights, not the filter's whole support.
struct filter_taps {
    int in_size = 0;
    int out_size = 0;
    int taps = 0;
    std::vector<int> first;
    std::vector<float> weights;
    // The weights in fixed point (kWeightOne = 1.0, summing to exactly
    // kWeightOne per output), two taps per int32: tap 2j in the low half,
    // tap 2j + 1 in the high half, 0 for a missing last tap. Output i:
    // pairs[i * pairs_per_output + j].
    std::vector<int32_t> pairs;
    int pairs_per_output = 0;
    // For the AVX2 kernels, eight outputs at a time: group g covers
    // outputs group_start(g) + [0, 8), as four registers of two outputs,
    // register r holding outputs r and r + 4 of the group. Pair j of
    // register r is at wide[((g * 4 + r) * pairs_per_output + j) * 8]:
    // the first output's pair in lanes 0-2 and 0 in lane 3, then the
    // second's likewise. group_offsets[(g * 4 + r) * 2 + half] is where
    // that output's taps start in a row of interleaved RGB int16 (3 *
    // first). The last group ends at out_size, overlapping the previous
    // one when out_size is not a multiple of 8; none when out_size < 8.
    int groups = 0;
    std::vector<int32_t> wide;
    std::vector<int> group_offsets;

    // For the AVX-512 planar kernel, the same groups read from a window
    // of kWindowWords int16 at window[g] (group_offsets of the group's
    // first output), with the window_pair of group g and pair j at
    // window_pairs[g * pairs_per_output + j]. Empty when some group's
    // taps do not fit in its window.
    std::vector<int> window;
    std::vector<window_pair> window_pairs;

    int group_start(int g) const {
        return std::min(g * kGroupOutputs, out_size - kGroupOutputs);
    }
};

// Triangle filter weight at distance d (in units of the filter radius).
double triangle(double d) {
    d = std::abs(d);
    return d < 1.0 ? 1.0 - d : 0.0;
}

// Fixed-point weights of output i: rounded, then the largest corrected
// so that they sum to exactly kWeightOne (a flat image stays flat, a
// same-size resize is exact).
// Limitation: coarse when shrinking a side over ~100x (weights near 2^-14).
void make_fixed_pairs(filter_taps &t) {
    t.pairs_per_output = (t.taps + 1) / 2;
    t.pairs.assign(static_cast<size_t>(t.out_size) * t.pairs_per_output, 0);
    std::vector<int32_t> fixed(static_cast<size_t>(t.pairs_per_output) * 2);
    for (int i = 0; i < t.out_size; ++i) {
        const float *w = &t.weights[static_cast<size_t>(i) * t.taps];
        std::fill(fixed.begin(), fixed.end(), 0);
        int32_t total = 0;
        for (int k = 0; k < t.taps; ++k) {
            fixed[k] = static_cast<int32_t>(std::lround(w[k] * kWeightOne));
            total += fixed[k];
        }
        *std::max_element(fixed.begin(), fixed.end()) += kWeightOne - total;
        for (int j = 0; j < t.pairs_per_output; ++j) {
            uint32_t low = static_cast<uint16_t>(fixed[2 * j]);
            uint32_t high = static_cast<uint16_t>(fixed[2 * j + 1]);
            t.pairs[static_cast<size_t>(i) * t.pairs_per_output + j] =
                static_cast<int32_t>(low | (high << kHalfBits));
        }
    }
}

// Fills t.groups, t.wide and t.group_offsets from t.pairs and t.first
// (see filter_taps).
void make_groups(filter_taps &t) {
    constexpr int kWide = 2 * kLanes;
    const int per = t.pairs_per_output;
    t.groups = t.out_size < kGroupOutputs
                   ? 0
                   : (t.out_size + kGroupOutputs - 1) / kGroupOutputs;
    size_t registers = static_cast<size_t>(t.groups) * kGroupRegisters;
    t.wide.assign(registers * per * kWide, 0);
    t.group_offsets.resize(registers * 2);
    for (int g = 0; g < t.groups; ++g) {
        for (int r = 0; r < kGroupRegisters; ++r) {
            size_t reg = static_cast<size_t>(g) * kGroupRegisters + r;
            for (int half = 0; half < 2; ++half) {
                int x = t.group_start(g) + r + half * kGroupRegisters;
                t.group_offsets[reg * 2 + half] = t.first[x] * kChannels;
                for (int j = 0; j < per; ++j) {
                    int32_t *w = &t.wide[(reg * per + j) * kWide];
                    std::fill(w + half * kLanes, w + half * kLanes + kChannels,
                              t.pairs[static_cast<size_t>(x) * per + j]);
                }
            }
        }
    }
}

// Fills t.window and t.window_pairs (see filter_taps), or leaves them empty
// when a group's taps (all of its pairs, a zero-weight last one included) do
// not fit in a window.
// Limitation: windows fit shrinks up to about 2x; larger ones use AVX2.
void make_windows(filter_taps &t) {
    constexpr int kPlaneLanes = kGroupOutputs;  // outputs per plane
    const int per = t.pairs_per_output;
    for (int g = 0; g < t.groups; ++g) {
        int x0 = t.group_start(g);
        int last = t.first[x0 + kGroupOutputs - 1] - t.first[x0] + 2 * per;
        if (last * kChannels > kWindowWords)
            return;
    }
    t.window.resize(t.groups);
    t.window_pairs.resize(static_cast<size_t>(t.groups) * per);
    for (int g = 0; g < t.groups; ++g) {
        int x0 = t.group_start(g);
        t.window[g] = t.first[x0] * kChannels;
        for (int j = 0; j < per; ++j) {
            window_pair &entry =
                t.window_pairs[static_cast<size_t>(g) * per + j];
            for (int lane = 0; lane < 2 * kPlaneLanes; ++lane) {
                int x = x0 + lane % kPlaneLanes;
                int tap = t.first[x] - t.first[x0] + 2 * j;
                // Words 2 * lane + half: taps 2 * j and 2 * j + 1.
                for (int half = 0; half < 2; ++half) {
                    int word = (tap + half) * kChannels;
                    int rg = lane / kPlaneLanes;
                    entry.rg[2 * lane + half] = static_cast<int16_t>(word + rg);
                    entry.b[2 * lane + half] = static_cast<int16_t>(word + 2);
                }
                entry.weights[lane] = t.pairs[static_cast<size_t>(x) * per + j];
            }
        }
    }
}

// Triangle (bilinear) filter of radius 1, stretched by the shrink factor
// when shrinking so that every input sample contributes (antialiasing).
// Pixel centres sit at i + 0.5 on both axes.
filter_taps make_taps(int in_size, int out_size) {
    double scale = static_cast<double>(in_size) / out_size;
    double support = std::max(scale, 1.0);  // radius 1, stretched

    // The non-zero span [lo, hi) of each output, then the longest span.
    std::vector<int> lo(out_size);
    std::vector<int> hi(out_size);
    int taps = 1;
    for (int i = 0; i < out_size; ++i) {
        double centre = (i + 0.5) * scale;
        int a = std::max(0, static_cast<int>(std::floor(centre - support)));
        int b = std::min(in_size,
                         static_cast<int>(std::ceil(centre + support)) + 1);
        while (a < b - 1 && triangle((a + 0.5 - centre) / support) == 0.0)
            ++a;
        while (b > a + 1 && triangle((b - 0.5 - centre) / support) == 0.0)
            --b;
        lo[i] = a;
        hi[i] = b;
        taps = std::max(taps, b - a);
    }

    filter_taps t;
    t.in_size = in_size;
    t.out_size = out_size;
    t.taps = taps;
    t.first.resize(out_size);
    t.weights.assign(static_cast<size_t>(out_size) * taps, 0.0F);
    for (int i = 0; i < out_size; ++i) {
        double centre = (i + 0.5) * scale;
        int first = std::clamp(lo[i], 0, in_size - taps);
        float *w = &t.weights[static_cast<size_t>(i) * taps];
        double total = 0.0;
        for (int j = lo[i]; j < hi[i]; ++j)
            total += triangle((j + 0.5 - centre) / support);
        FACEVEC_ASSERT(total > 0.0, "empty resampling filter");
        for (int j = lo[i]; j < hi[i]; ++j) {
            w[j - first] = static_cast<float>(
                triangle((j + 0.5 - centre) / support) / total);
        }
        t.first[i] = first;
    }
    make_fixed_pairs(t);
    make_groups(t);
    make_windows(t);
    return t;
}

// The filter for in_size -> out_size, made once per thread and size pair
// (a small per-thread cache, so no locking), shared while in use.
std::shared_ptr<const filter_taps> cached_taps(int in_size, int out_size) {
    thread_local std::array<std::shared_ptr<const filter_taps>,
                            kTapCacheEntries>
        cache;
    thread_local size_t next = 0;
    for (const auto &entry : cache) {
        if (entry && entry->in_size == in_size && entry->out_size == out_size)
            return entry;
    }
    auto made =
        std::make_shared<const filter_taps>(make_taps(in_size, out_size));
    cache[next] = made;
    next = (next + 1) % kTapCacheEntries;
    return made;
}

// ---------------------------------------------------------------------
// Kernels. Both passes sum integers times fixed-point weights exactly in
// int32, so every variant gives the same sums, converted to floats by the
// same operations: SSE2 and AVX2 agree bit for bit.

// One vertical pass output: the int32 sum in units of 2^-kWeightBits,
// rounded to int16 in units of 2^-kFractionBits.
inline int16_t column_value(int32_t acc) {
    return static_cast<int16_t>((acc + kColumnRound) >> kColumnShift);
}

// Vertical pass, outputs [i, count) of one row, one at a time:
// dst[i] = sum_k w_k * rows[k][i] (see column_value).
void column_tail(const uint8_t *const *rows, const int32_t *pairs, int taps,
                 size_t i, size_t count, int16_t *dst) {
    for (; i < count; ++i) {
        int32_t acc = 0;
        for (int k = 0; k < taps; ++k) {
            int32_t pair = pairs[k / 2];
            auto w =
                static_cast<int16_t>(k % 2 == 0 ? pair : pair >> kHalfBits);
            acc += w * int32_t{rows[k][i]};
        }
        dst[i] = column_value(acc);
    }
}

// Vertical pass for one output row: count bytes from each of the `taps`
// rows, weighted by `pairs` (pairs_per_output int32 of filter_taps),
// summed into count int16 at dst (see column_value).
void column_portable(const uint8_t *const *rows, const int32_t *pairs, int taps,
                     size_t count, int16_t *dst) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    const __m128i round = _mm_set1_epi32(kColumnRound);
    for (; i + kStepBytes <= count; i += kStepBytes) {
        __m128i acc[4] = {zero, zero, zero, zero};
        for (int k = 0; k < taps; k += 2) {
            // Bytes of two rows interleaved as int16 pairs, times the
            // pair of weights: four sums of two products per madd.
            __m128i a =
                _mm_loadu_si128(reinterpret_cast<const __m128i *>(rows[k] + i));
            __m128i b = zero;
            if (k + 1 < taps) {
                b = _mm_loadu_si128(
                    reinterpret_cast<const __m128i *>(rows[k + 1] + i));
            }
            __m128i w = _mm_set1_epi32(pairs[k / 2]);
            __m128i a_lo = _mm_unpacklo_epi8(a, zero);
            __m128i a_hi = _mm_unpackhi_epi8(a, zero);
            __m128i b_lo = _mm_unpacklo_epi8(b, zero);
            __m128i b_hi = _mm_unpackhi_epi8(b, zero);
            acc[0] = _mm_add_epi32(
                acc[0], _mm_madd_epi16(_mm_unpacklo_epi16(a_lo, b_lo), w));
            acc[1] = _mm_add_epi32(
                acc[1], _mm_madd_epi16(_mm_unpackhi_epi16(a_lo, b_lo), w));
            acc[2] = _mm_add_epi32(
                acc[2], _mm_madd_epi16(_mm_unpacklo_epi16(a_hi, b_hi), w));
            acc[3] = _mm_add_epi32(
                acc[3], _mm_madd_epi16(_mm_unpackhi_epi16(a_hi, b_hi), w));
        }
        for (auto &a : acc)
            a = _mm_srai_epi32(_mm_add_epi32(a, round), kColumnShift);
        _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i),
                         _mm_packs_epi32(acc[0], acc[1]));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i + kLanes * 2),
                         _mm_packs_epi32(acc[2], acc[3]));
    }
#endif
    column_tail(rows, pairs, taps, i, count, dst);
}

// Horizontal pass for output pixel x of one row: `in` holds interleaved
// RGB int16 (see column_value), padded as resample() does; the sum of
// each channel in int32, then as 0..255 floats.
template <int Taps>
f32x4 row_pixel(const int16_t *in, const filter_taps &h, int x) {
    const int taps = Taps > 0 ? Taps : h.taps;
    const int32_t *pairs =
        &h.pairs[static_cast<size_t>(x) * h.pairs_per_output];
    const int16_t *s = in + static_cast<size_t>(h.first[x]) * kChannels;
    int32_t acc[kChannels] = {0, 0, 0};
    for (int k = 0; k < taps; ++k) {
        int32_t pair = pairs[k / 2];
        auto w = static_cast<int16_t>(k % 2 == 0 ? pair : pair >> kHalfBits);
        for (int c = 0; c < kChannels; ++c)
            acc[c] += w * int32_t{s[k * kChannels + c]};
    }
    f32x4 out = {};
    for (int c = 0; c < kChannels; ++c)
        out[c] = static_cast<float>(acc[c]) * kInverseRowOne;
    return out;
}

#if defined(__SSE2__)
// Output pixel x of the horizontal pass (see row_pixel) in one register:
// per tap pair, pixels 2j and 2j + 1 interleaved as R R G G B B . .,
// times the pair of weights.
template <int Taps>
inline __m128 row_pixel_sse2(const int16_t *in, const filter_taps &h, int x) {
    const int taps = Taps > 0 ? Taps : h.taps;
    const int32_t *pairs =
        &h.pairs[static_cast<size_t>(x) * h.pairs_per_output];
    const int16_t *s = in + static_cast<size_t>(h.first[x]) * kChannels;
    __m128i acc = _mm_setzero_si128();
    for (int k = 0; k < taps; k += 2) {
        __m128i a = _mm_loadu_si128(
            reinterpret_cast<const __m128i *>(s + k * kChannels));
        __m128i b = _mm_loadu_si128(
            reinterpret_cast<const __m128i *>(s + (k + 1) * kChannels));
        acc = _mm_add_epi32(acc, _mm_madd_epi16(_mm_unpacklo_epi16(a, b),
                                                _mm_set1_epi32(pairs[k / 2])));
    }
    return _mm_mul_ps(_mm_cvtepi32_ps(acc), _mm_set1_ps(kInverseRowOne));
}
#endif

// Horizontal pass for one row: out[x] = sum_k w * in pixel (first[x] +
// k) as R, G, B and a lane of 0, for x < h.out_size.
template <int Taps>
void row_portable(const int16_t *in, const filter_taps &h, f32x4 *out) {
    for (int x = 0; x < h.out_size; ++x) {
#if defined(__SSE2__)
        out[x] = row_pixel_sse2<Taps>(in, h, x);
#else
        out[x] = row_pixel<Taps>(in, h, x);
#endif
    }
}

#if defined(__x86_64__)
// The same passes with AVX2: vertically 16 bytes widened to int16 per
// step, two rows per madd; horizontally two output pixels per register.

// Outputs i..i+15 of the vertical pass (see column_portable), with the
// pair count fixed at compile time when Pairs > 0.
template <int Pairs>
__attribute__((target("avx2"), always_inline)) inline void column_step_avx2(
    const uint8_t *const *rows, const int32_t *pairs, int taps, size_t i,
    int16_t *dst) {
    const int pair_count = Pairs > 0 ? Pairs : (taps + 1) / 2;
    // lo collects outputs 0-3 and 8-11, hi 4-7 and 12-15, so packing
    // them lane by lane gives outputs 0-15 in order.
    __m256i lo = _mm256_setzero_si256();
    __m256i hi = _mm256_setzero_si256();
    for (int j = 0; j < pair_count; ++j) {
        int k = 2 * j;
        __m256i a = _mm256_cvtepu8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(rows[k] + i)));
        __m256i b = _mm256_setzero_si256();
        if (k + 1 < taps) {
            b = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                reinterpret_cast<const __m128i *>(rows[k + 1] + i)));
        }
        __m256i w = _mm256_set1_epi32(pairs[j]);
        lo = _mm256_add_epi32(
            lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w));
        hi = _mm256_add_epi32(
            hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w));
    }
    const __m256i round = _mm256_set1_epi32(kColumnRound);
    lo = _mm256_srai_epi32(_mm256_add_epi32(lo, round), kColumnShift);
    hi = _mm256_srai_epi32(_mm256_add_epi32(hi, round), kColumnShift);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i),
                        _mm256_packs_epi32(lo, hi));
}

// The vertical pass over one row, count >= kStepBytes.
template <int Pairs>
__attribute__((target("avx2"), always_inline)) inline void column_loop_avx2(
    const uint8_t *const *rows, const int32_t *pairs, int taps, size_t count,
    int16_t *dst) {
    size_t i = 0;
    for (; i + kStepBytes <= count; i += kStepBytes)
        column_step_avx2<Pairs>(rows, pairs, taps, i, dst);
    // The last outputs again, overlapping: same values, no scalar tail.
    if (i < count)
        column_step_avx2<Pairs>(rows, pairs, taps, count - kStepBytes, dst);
}

template <int Pairs>
__attribute__((target("avx2"))) void column_avx2(const uint8_t *const *rows,
                                                 const int32_t *pairs, int taps,
                                                 size_t count, int16_t *dst) {
    if (count < kStepBytes)
        return column_tail(rows, pairs, taps, 0, count, dst);
    if constexpr (Pairs > 0) {
        // Local copies, which the stores to dst cannot alias, so that the
        // row pointers and weights stay in registers.
        std::array<const uint8_t *, 2 * Pairs> local_rows{};
        std::array<int32_t, Pairs> local_pairs{};
        std::copy_n(rows, taps, local_rows.begin());
        std::copy_n(pairs, Pairs, local_pairs.begin());
        column_loop_avx2<Pairs>(local_rows.data(), local_pairs.data(), taps,
                                count, dst);
    } else {
        column_loop_avx2<Pairs>(rows, pairs, taps, count, dst);
    }
}

// 8 int16 at p in each 128-bit lane: p0's in the low one, p1's in the high.
__attribute__((target("avx2"), always_inline)) inline __m256i load_two(
    const int16_t *p0, const int16_t *p1) {
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(p0))),
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(p1)), 1);
}

// The int32 sums of register `reg` of filter_taps' groups (two output
// pixels, see row_pixel): R G B 0 of the first output in the low lane,
// of the second in the high lane.
template <int Taps>
__attribute__((target("avx2"), always_inline)) inline __m256i row_two_avx2(
    const int16_t *in, const int32_t *wide, const int *offsets, int taps,
    size_t reg, int per) {
    constexpr int kWide = 2 * kLanes;
    if constexpr (Taps > 0)
        taps = Taps;
    const int32_t *w = wide + reg * per * kWide;
    const int16_t *s0 = in + offsets[reg * 2];
    const int16_t *s1 = in + offsets[reg * 2 + 1];
    // R0 G0 B0 R1 G1 B1 R2 G2 as R0 R1 G0 G1 B0 B1 0 0 (bytes; -1 is 0).
    const __m256i pair_up = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11, -1, -1, -1, -1));
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < taps; k += 2) {
        __m256i ab = _mm256_shuffle_epi8(
            load_two(s0 + k * kChannels, s1 + k * kChannels), pair_up);
        __m256i wk = _mm256_loadu_si256(
            reinterpret_cast<const __m256i *>(w + (k / 2) * kWide));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ab, wk));
    }
    return acc;
}

template <int Taps>
__attribute__((target("avx2"))) void row_avx2(const int16_t *in,
                                              const filter_taps &h,
                                              f32x4 *out) {
    const __m256 unit = _mm256_set1_ps(kInverseRowOne);
    for (int x = 0; h.groups == 0 && x < h.out_size; ++x)
        out[x] = row_pixel_sse2<Taps>(in, h, x);
    for (int g = 0; g < h.groups; ++g) {
        f32x4 *group = out + h.group_start(g);
        for (int r = 0; r < kGroupRegisters; ++r) {
            size_t reg = static_cast<size_t>(g) * kGroupRegisters + r;
            __m256 two =
                _mm256_mul_ps(_mm256_cvtepi32_ps(row_two_avx2<Taps>(
                                  in, h.wide.data(), h.group_offsets.data(),
                                  h.taps, reg, h.pairs_per_output)),
                              unit);
            group[r] = _mm256_castps256_ps128(two);
            group[r + kGroupRegisters] = _mm256_extractf128_ps(two, 1);
        }
    }
}

// (pixel - mean) * scale for a pixel that is sum * kInverseRowOne, as
// (sum - mean') * scale' with mean' = mean / kInverseRowOne and scale' =
// scale * kInverseRowOne: scaling by a power of two is exact, so both
// give the same floats when mean' and scale' are normal floats (or mean
// is 0). Returns false (use the plain form) when they would not be.
bool fold_row_unit(f32x4 mean, f32x4 scale, f32x4 &folded_mean,
                   f32x4 &folded_scale) {
    // Far inside the normal range, so the folded values and the
    // differences they take part in stay normal.
    constexpr float kLargest = 0x1p100F;
    constexpr float kSmallest = 0x1p-100F;
    auto in_range = [](float v) {
        float a = std::abs(v);
        return a >= kSmallest && a <= kLargest;
    };
    for (int c = 0; c < kChannels; ++c) {
        if (!in_range(scale[c]) || !(mean[c] == 0.0F || in_range(mean[c])))
            return false;
    }
    folded_mean = mean / kInverseRowOne;
    folded_scale = scale * kInverseRowOne;
    return true;
}

// The horizontal pass straight into three planes: (pixel - mean) *
// scale, lane s of output pixel x to planes[s][x], the same floats as
// row_avx2 then write_planar, with mean and scale folded as
// fold_row_unit does. Per group, the four registers (outputs r and r +
// 4) transposed in each 128-bit lane give outputs 0-3 low and 4-7 high,
// already in order.
template <int Taps>
__attribute__((target("avx2"))) void row_planar_avx2(const int16_t *in,
                                                     const filter_taps &h,
                                                     f32x4 folded_mean,
                                                     f32x4 folded_scale,
                                                     float *const *planes) {
    constexpr int kLowPairs = 0x44;   // lanes 0, 1 of a, then 0, 1 of b
    constexpr int kHighPairs = 0xEE;  // lanes 2, 3 of a, then 2, 3 of b
    const __m256 m =
        _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(&folded_mean));
    const __m256 k =
        _mm256_broadcast_ps(reinterpret_cast<const __m128 *>(&folded_scale));
    // Locals, so that the stores to the planes leave them in registers.
    const int32_t *wide = h.wide.data();
    const int *offsets = h.group_offsets.data();
    const int taps = h.taps;
    const int per = h.pairs_per_output;
    float *const plane[kChannels] = {planes[0], planes[1], planes[2]};
    for (int g = 0; g < h.groups; ++g) {
        __m256 v[kGroupRegisters];
        for (int r = 0; r < kGroupRegisters; ++r) {
            size_t reg = static_cast<size_t>(g) * kGroupRegisters + r;
            __m256 sum = _mm256_cvtepi32_ps(
                row_two_avx2<Taps>(in, wide, offsets, taps, reg, per));
            v[r] = _mm256_mul_ps(_mm256_sub_ps(sum, m), k);
        }
        __m256 rg_low = _mm256_unpacklo_ps(v[0], v[1]);
        __m256 rg_high = _mm256_unpacklo_ps(v[2], v[3]);
        __m256 b_low = _mm256_unpackhi_ps(v[0], v[1]);
        __m256 b_high = _mm256_unpackhi_ps(v[2], v[3]);
        int x = h.group_start(g);
        _mm256_storeu_ps(plane[0] + x,
                         _mm256_shuffle_ps(rg_low, rg_high, kLowPairs));
        _mm256_storeu_ps(plane[1] + x,
                         _mm256_shuffle_ps(rg_low, rg_high, kHighPairs));
        _mm256_storeu_ps(plane[2] + x,
                         _mm256_shuffle_ps(b_low, b_high, kLowPairs));
    }
}

// The vertical pass and the planar horizontal pass with AVX-512 (F, BW,
// VL, VBMI, VNNI): the same sums as the AVX2 kernels, twice as wide,
// each multiply-add of int16 pairs fused with its accumulation.
#define FACEVEC_AVX512 target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni")

// GCC 12 warns inside its own AVX-512 intrinsics, which fill an
// "undefined" placeholder register: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Byte permutes that take 64 bytes of two rows, a and b, to the int16
// pairs (a, b) of 16 outputs (the odd bytes are zeroed by a mask), in
// the order that two packs turn back into 64 outputs in order: register
// q is quarter q of the packs' inputs, int32 lane m of it output 32 * (q
// / 2) + 8 * (m / 4) + 4 * (q % 2) + m % 4.
struct alignas(kCacheLine) column_picks {
    static constexpr int kRegisters = 4;
    static constexpr int kBytes = 64;
    std::array<std::array<uint8_t, kBytes>, kRegisters> index{};

    column_picks() {
        constexpr int kHalf = 32;  // outputs per pack
        constexpr int kQuad = 4;   // int32 per 128-bit lane of a pack input
        for (int q = 0; q < kRegisters; ++q) {
            for (int m = 0; m < kBytes / kQuad; ++m) {
                int output = kHalf * (q / 2) + 2 * kQuad * (m / kQuad) +
                             kQuad * (q % 2) + m % kQuad;
                index[q][kQuad * m] = static_cast<uint8_t>(output);
                index[q][kQuad * m + 2] = static_cast<uint8_t>(kBytes + output);
            }
        }
    }
};

// Outputs i..i+63 of the vertical pass (see column_portable): per tap
// pair, each of the four byte permutes of column_picks gives 16 outputs'
// pairs for one fused multiply-add; the sums start at the rounding term.
template <int Pairs>
__attribute__((FACEVEC_AVX512, always_inline)) inline void column_step_avx512(
    const uint8_t *const *rows, const int32_t *pairs, int taps, size_t i,
    const __m512i *picks, int16_t *dst) {
    constexpr __mmask64 kEvenBytes = 0x5555555555555555ULL;
    constexpr int kPackOutputs = 32;
    const int pair_count = Pairs > 0 ? Pairs : (taps + 1) / 2;
    const __m512i round = _mm512_set1_epi32(kColumnRound);
    __m512i acc[column_picks::kRegisters] = {round, round, round, round};
    for (int j = 0; j < pair_count; ++j) {
        int k = 2 * j;
        __m512i a = _mm512_loadu_si512(rows[k] + i);
        __m512i b = _mm512_setzero_si512();
        if (k + 1 < taps)
            b = _mm512_loadu_si512(rows[k + 1] + i);
        __m512i w = _mm512_set1_epi32(pairs[j]);
        for (int q = 0; q < column_picks::kRegisters; ++q) {
            __m512i ab =
                _mm512_maskz_permutex2var_epi8(kEvenBytes, a, picks[q], b);
            acc[q] = _mm512_dpwssd_epi32(acc[q], ab, w);
        }
    }
    for (auto &v : acc)
        v = _mm512_srai_epi32(v, kColumnShift);
    _mm512_storeu_si512(dst + i, _mm512_packs_epi32(acc[0], acc[1]));
    _mm512_storeu_si512(dst + i + kPackOutputs,
                        _mm512_packs_epi32(acc[2], acc[3]));
}

template <int Pairs>
__attribute__((FACEVEC_AVX512)) void column_avx512(const uint8_t *const *rows,
                                                   const int32_t *pairs,
                                                   int taps, size_t count,
                                                   int16_t *dst) {
    constexpr size_t kStep = column_picks::kBytes;
    if (count < kStep)
        return column_avx2<Pairs>(rows, pairs, taps, count, dst);
    static const column_picks kPicks;
    __m512i picks[column_picks::kRegisters];
    for (int q = 0; q < column_picks::kRegisters; ++q)
        picks[q] = _mm512_load_si512(kPicks.index[q].data());
    // Local copies, as in column_avx2.
    constexpr int kSlots = Pairs > 0 ? Pairs : 1;
    std::array<const uint8_t *, 2 * kSlots> local_rows{};
    std::array<int32_t, kSlots> local_pairs{};
    if constexpr (Pairs > 0) {
        std::copy_n(rows, taps, local_rows.begin());
        std::copy_n(pairs, Pairs, local_pairs.begin());
        rows = local_rows.data();
        pairs = local_pairs.data();
    }
    size_t i = 0;
    for (; i + kStep <= count; i += kStep)
        column_step_avx512<Pairs>(rows, pairs, taps, i, picks, dst);
    // The last outputs again, overlapping: same values, no scalar tail.
    if (i < count)
        column_step_avx512<Pairs>(rows, pairs, taps, count - kStep, picks, dst);
}

// The horizontal pass straight into three planes, as row_planar_avx2
// computes it, for filters with windows (see filter_taps): per group of
// eight outputs, one register gives the R and G sums (lanes 0-7, 8-15),
// another the B sums (lanes 0-7), each tap pair picked from the window
// by one two-register word permute.
template <int Pairs>
__attribute__((FACEVEC_AVX512)) void row_planar_avx512(const int16_t *in,
                                                       const filter_taps &h,
                                                       f32x4 folded_mean,
                                                       f32x4 folded_scale,
                                                       float *const *planes) {
    constexpr int kRegisterWords = kWindowWords / 2;
    const int per = Pairs > 0 ? Pairs : h.pairs_per_output;
    constexpr __mmask16 kHighLanes = 0xFF00;  // lanes 8-15: the G sums
    const __m512 m_rg =
        _mm512_mask_blend_ps(kHighLanes, _mm512_set1_ps(folded_mean[0]),
                             _mm512_set1_ps(folded_mean[1]));
    const __m512 k_rg =
        _mm512_mask_blend_ps(kHighLanes, _mm512_set1_ps(folded_scale[0]),
                             _mm512_set1_ps(folded_scale[1]));
    const __m512 m_b = _mm512_set1_ps(folded_mean[2]);
    const __m512 k_b = _mm512_set1_ps(folded_scale[2]);
    const window_pair *pairs = h.window_pairs.data();
    const int *window = h.window.data();
    float *const plane[kChannels] = {planes[0], planes[1], planes[2]};
    for (int g = 0; g < h.groups; ++g) {
        const int16_t *at = in + window[g];
        const __m512i low = _mm512_loadu_si512(at);
        const __m512i high = _mm512_loadu_si512(at + kRegisterWords);
        __m512i rg = _mm512_setzero_si512();
        __m512i b = _mm512_setzero_si512();
        for (int j = 0; j < per; ++j) {
            const window_pair &pair = pairs[static_cast<size_t>(g) * per + j];
            __m512i w = _mm512_load_si512(pair.weights.data());
            __m512i pick_rg = _mm512_permutex2var_epi16(
                low, _mm512_load_si512(pair.rg.data()), high);
            __m512i pick_b = _mm512_permutex2var_epi16(
                low, _mm512_load_si512(pair.b.data()), high);
            rg = _mm512_dpwssd_epi32(rg, pick_rg, w);
            b = _mm512_dpwssd_epi32(b, pick_b, w);
        }
        __m512 rg_out =
            _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(rg), m_rg), k_rg);
        __m512 b_out =
            _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(b), m_b), k_b);
        int x = h.group_start(g);
        _mm256_storeu_ps(plane[0] + x, _mm512_castps512_ps256(rg_out));
        _mm256_storeu_ps(plane[1] + x, _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                           _mm512_castps_pd(rg_out), 1)));
        _mm256_storeu_ps(plane[2] + x, _mm512_castps512_ps256(b_out));
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef FACEVEC_AVX512

// The widest kernels the CPU has, decided once. FACEVEC_SIMD=sse2 or
// FACEVEC_SIMD=avx2 in the environment holds them to the portable (SSE2)
// or the AVX2 ones; every level gives the same floats.
enum class simd_level { sse2, avx2, avx512 };

simd_level simd() {
    static const simd_level kLevel = [] {
        const char *forced = std::getenv("FACEVEC_SIMD");
        std::string_view want = forced != nullptr ? forced : "";
        if (want == "sse2" || __builtin_cpu_supports("avx2") == 0)
            return simd_level::sse2;
        bool avx512 = __builtin_cpu_supports("avx512f") != 0 &&
                      __builtin_cpu_supports("avx512bw") != 0 &&
                      __builtin_cpu_supports("avx512vl") != 0 &&
                      __builtin_cpu_supports("avx512vbmi") != 0 &&
                      __builtin_cpu_supports("avx512vnni") != 0;
        return want != "avx2" && avx512 ? simd_level::avx512 : simd_level::avx2;
    }();
    return kLevel;
}

bool has_avx2() {
    return simd() != simd_level::sse2;
}

bool has_avx512() {
    return simd() == simd_level::avx512;
}
#endif

void resample_column(const uint8_t *const *rows, const int32_t *pairs, int taps,
                     size_t count, int16_t *dst) {
#if defined(__x86_64__)
    if (has_avx512()) {
        switch ((taps + 1) / 2) {
            case 1:
                return column_avx512<1>(rows, pairs, taps, count, dst);
            case 2:
                return column_avx512<2>(rows, pairs, taps, count, dst);
            case 3:
                return column_avx512<3>(rows, pairs, taps, count, dst);
            default:
                return column_avx512<0>(rows, pairs, taps, count, dst);
        }
    }
    if (has_avx2()) {
        switch ((taps + 1) / 2) {
            case 1:
                return column_avx2<1>(rows, pairs, taps, count, dst);
            case 2:
                return column_avx2<2>(rows, pairs, taps, count, dst);
            case 3:
                return column_avx2<3>(rows, pairs, taps, count, dst);
            default:
                return column_avx2<0>(rows, pairs, taps, count, dst);
        }
    }
#endif
    column_portable(rows, pairs, taps, count, dst);
}

template <int Taps>
void resample_row_taps(const int16_t *in, const filter_taps &h, f32x4 *out) {
#if defined(__x86_64__)
    if (has_avx2())
        return row_avx2<Taps>(in, h, out);
#endif
    row_portable<Taps>(in, h, out);
}

// The horizontal pass with the tap count fixed at compile time for the
// common small filters, so that the tap loop unrolls.
void resample_row(const int16_t *in, const filter_taps &h, f32x4 *out) {
    switch (h.taps) {
        case 1:
            return resample_row_taps<1>(in, h, out);
        case 2:
            return resample_row_taps<2>(in, h, out);
        case 3:
            return resample_row_taps<3>(in, h, out);
        case 4:
            return resample_row_taps<4>(in, h, out);
        default:
            return resample_row_taps<0>(in, h, out);
    }
}

// The vertical pass of resampling the `box` of `img` to out_w x out_h
// pixels with the triangle filter: for each output row y, the box's
// columns filtered vertically (out_w is reached later, by the horizontal
// filter h) are handed to row(y, column, *h): box.width * 3 int16 as
// column_value gives them, followed by kColumnPadding zeros that the
// horizontal kernels read with weight 0.
template <typename Row>
void resample_rows(const image &img, const crop_box &box, int out_w, int out_h,
                   Row &&row) {
    auto h = cached_taps(box.width, out_w);
    auto v = cached_taps(box.height, out_h);
    size_t row_bytes = static_cast<size_t>(img.width) * kChannels;
    size_t count = static_cast<size_t>(box.width) * kChannels;
    const uint8_t *origin = img.rgb.data() +
                            static_cast<size_t>(box.y) * row_bytes +
                            static_cast<size_t>(box.x) * kChannels;

    // Scratch reused by the thread's later calls. The column row starts
    // on a cache line, so that the vertical kernels' stores and the
    // horizontal ones' window loads split fewer lines.
    thread_local std::vector<int16_t> scratch;
    thread_local std::vector<const uint8_t *> rows;
    constexpr size_t kLineWords = kCacheLine / sizeof(int16_t);
    scratch.resize(count + kColumnPadding + kLineWords);
    void *start = scratch.data();
    size_t space = scratch.size() * sizeof(int16_t);
    auto *column = static_cast<int16_t *>(std::align(
        kCacheLine, (count + kColumnPadding) * sizeof(int16_t), start, space));
    FACEVEC_ASSERT(column != nullptr, "column scratch too small to align");
    std::fill(column + count, column + count + kColumnPadding, int16_t{0});
    rows.resize(v->taps);
    for (int y = 0; y < out_h; ++y) {
        for (int k = 0; k < v->taps; ++k)
            rows[k] = origin + (v->first[y] + k) * row_bytes;
        resample_column(rows.data(),
                        &v->pairs[static_cast<size_t>(y) * v->pairs_per_output],
                        v->taps, count, column);
        row(y, column, *h);
    }
}

// Resamples as resample_rows and hands each output row to sink(y,
// pixels): out_w f32x4 holding R, G, B in 0..255 (unrounded) and an
// unused lane.
template <typename Sink>
void resample(const image &img, const crop_box &box, int out_w, int out_h,
              Sink &&sink) {
    thread_local std::vector<f32x4> pixels;
    pixels.resize(out_w);
    resample_rows(img, box, out_w, out_h,
                  [&](int y, const int16_t *column, const filter_taps &h) {
                      resample_row(column, h, pixels.data());
                      sink(y, pixels.data());
                  });
}

uint8_t to_byte(float value) {
    constexpr float kMaxByte = 255.0F;
    return static_cast<uint8_t>(std::lround(std::clamp(value, 0.0F, kMaxByte)));
}

bool box_inside(const crop_box &b, const image &img) {
    return b.width > 0 && b.height > 0 && b.x >= 0 && b.y >= 0 &&
           b.x <= img.width - b.width && b.y <= img.height - b.height;
}

std::string box_text(const crop_box &b) {
    return std::to_string(b.width) + "x" + std::to_string(b.height) + " at (" +
           std::to_string(b.x) + ", " + std::to_string(b.y) + ")";
}

std::string size_text(const image &img) {
    return std::to_string(img.width) + "x" + std::to_string(img.height);
}

status check_image(const image &img) {
    bool consistent =
        img.width > 0 && img.height > 0 &&
        img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3;
    if (!consistent) {
        return invalid_argument("image of " + size_text(img) + " with " +
                                std::to_string(img.rgb.size()) +
                                " bytes is empty or inconsistent");
    }
    if (std::min(img.width, img.height) < kMinImageSide) {
        return invalid_argument("image of " + size_text(img) +
                                " pixels is too small: the shorter side "
                                "must be at least " +
                                std::to_string(kMinImageSide) + " pixels");
    }
    return status::ok();
}

result<crop_box> region_for(const image &img, const preprocess_spec &spec) {
    switch (spec.crop) {
        case crop_mode::none:
            return crop_box{0, 0, img.width, img.height};
        case crop_mode::center_fraction:
            return center_crop_box(img.width, img.height, spec.crop_fraction);
        case crop_mode::box:
            if (!box_inside(spec.box, img)) {
                return invalid_argument("crop box " + box_text(spec.box) +
                                        " is not inside the image of " +
                                        size_text(img));
            }
            return spec.box;
    }
    return invalid_argument("unknown crop mode");
}

// Channel c of the spec's order is RGB channel source_channel(c).
int source_channel(const preprocess_spec &spec, int c) {
    constexpr int kLast = 2;
    return spec.order == channel_order::rgb ? c : kLast - c;
}

size_t tensor_index(const preprocess_spec &spec, int c, size_t pixel) {
    size_t plane = static_cast<size_t>(spec.width) * spec.height;
    return spec.layout == tensor_layout::nchw ? c * plane + pixel
                                              : pixel * 3 + c;
}

// Writes (pixels[x] - mean) * scale, lane s of pixel x to planes[s][x],
// four pixels at a time (a 4 x 4 transpose); returns how many pixels it
// wrote (a multiple of 4, the rest is the caller's).
int write_planar(const f32x4 *pixels, int width, f32x4 mean, f32x4 scale,
                 float *const *planes) {
    int x = 0;
#if defined(__SSE2__)
    for (; x + kLanes <= width; x += kLanes) {
        f32x4 v[kLanes];
        for (int i = 0; i < kLanes; ++i)
            v[i] = (pixels[x + i] - mean) * scale;
        __m128 p0 = v[0];
        __m128 p1 = v[1];
        __m128 p2 = v[2];
        __m128 p3 = v[3];
        _MM_TRANSPOSE4_PS(p0, p1, p2, p3);
        _mm_storeu_ps(planes[0] + x, p0);
        _mm_storeu_ps(planes[1] + x, p1);
        _mm_storeu_ps(planes[2] + x, p2);
    }
#endif
    return x;
}

// Writes to_byte of the R, G, B lanes of pixels[x] to dst[3x..3x+2],
// four pixels at a time; returns how many pixels it wrote (a multiple of
// 4, the rest is the caller's). Rounds as lround does for the clamped,
// non-negative values: truncated, plus one when what was cut is >= 0.5
// (that difference is exact).
int write_bytes(const f32x4 *pixels, int width, uint8_t *dst) {
    int x = 0;
#if defined(__SSE2__)
    constexpr float kMaxByte = 255.0F;
    constexpr float kHalf = 0.5F;
    const __m128 low = _mm_setzero_ps();
    const __m128 high = _mm_set1_ps(kMaxByte);
    const __m128 half = _mm_set1_ps(kHalf);
    for (; x + kLanes <= width; x += kLanes) {
        __m128i v[kLanes];
        for (int i = 0; i < kLanes; ++i) {
            __m128 p = _mm_min_ps(_mm_max_ps(pixels[x + i], low), high);
            __m128i whole = _mm_cvttps_epi32(p);
            __m128 cut = _mm_sub_ps(p, _mm_cvtepi32_ps(whole));
            // The comparison's all-ones lanes are -1: subtracting adds 1.
            v[i] =
                _mm_sub_epi32(whole, _mm_castps_si128(_mm_cmpge_ps(cut, half)));
        }
        alignas(kStepBytes) std::array<uint8_t, kStepBytes> bytes{};
        _mm_store_si128(reinterpret_cast<__m128i *>(bytes.data()),
                        _mm_packus_epi16(_mm_packs_epi32(v[0], v[1]),
                                         _mm_packs_epi32(v[2], v[3])));
        for (int i = 0; i < kLanes; ++i) {
            std::memcpy(dst + static_cast<size_t>(x + i) * kChannels,
                        &bytes[static_cast<size_t>(i) * kLanes], kChannels);
        }
    }
#else
    (void)pixels;
    (void)width;
    (void)dst;
#endif
    return x;
}

// The horizontal pass of one row written as write_planar writes it:
// (pixel - mean) * scale, lane s of output pixel x to planes[s][x], for
// the h.out_size pixels of the row. With AVX-512 or AVX2 in one pass
// when the row has a group of outputs and the mean and scale fold (see
// fold_row_unit); otherwise through a row of f32x4 pixels.
template <int Taps>
void row_planar_taps(const int16_t *in, const filter_taps &h, f32x4 mean,
                     f32x4 scale, float *const *planes) {
#if defined(__x86_64__)
    f32x4 folded_mean;
    f32x4 folded_scale;
    if (has_avx2() && h.groups > 0 &&
        fold_row_unit(mean, scale, folded_mean, folded_scale)) {
        if (has_avx512() && !h.window.empty()) {
            constexpr int kPairs = (Taps + 1) / 2;
            return row_planar_avx512<kPairs>(in, h, folded_mean, folded_scale,
                                             planes);
        }
        return row_planar_avx2<Taps>(in, h, folded_mean, folded_scale, planes);
    }
#endif
    thread_local std::vector<f32x4> pixels;
    pixels.resize(h.out_size);
    resample_row_taps<Taps>(in, h, pixels.data());
    int x = write_planar(pixels.data(), h.out_size, mean, scale, planes);
    for (; x < h.out_size; ++x) {
        f32x4 value = (pixels[x] - mean) * scale;
        for (int c = 0; c < kChannels; ++c)
            planes[c][x] = value[c];
    }
}

void resample_row_planar(const int16_t *in, const filter_taps &h, f32x4 mean,
                         f32x4 scale, float *const *planes) {
    switch (h.taps) {
        case 1:
            return row_planar_taps<1>(in, h, mean, scale, planes);
        case 2:
            return row_planar_taps<2>(in, h, mean, scale, planes);
        case 3:
            return row_planar_taps<3>(in, h, mean, scale, planes);
        case 4:
            return row_planar_taps<4>(in, h, mean, scale, planes);
        default:
            return row_planar_taps<0>(in, h, mean, scale, planes);
    }
}

preprocess_spec make_spec(int side, channel_order order,
                          std::array<float, 3> mean,
                          std::array<float, 3> scale) {
    preprocess_spec s;
    s.width = side;
    s.height = side;
    s.order = order;
    s.mean = mean;
    s.scale = scale;
    return s;
}

// The models' input specs, kept here so that the decoders build without
// the network code (the fuzzer links only them); image_test checks that
// they equal the model descriptions in embed/models.cpp.
const std::map<std::string, preprocess_spec, std::less<>> &builtin_specs() {
    constexpr int kFaceResnetSide = 150;
    constexpr float kFaceResnetScale = 1.0F / 255.0F;
    constexpr int kVggSide = 224;
    static const std::map<std::string, preprocess_spec, std::less<>> kSpecs = {
        {"face-resnet",
         make_spec(kFaceResnetSide, channel_order::rgb,
                   {122.782F, 117.001F, 104.298F},
                   {kFaceResnetScale, kFaceResnetScale, kFaceResnetScale})},
        {"vgg16", make_spec(kVggSide, channel_order::bgr,
                            {103.939F, 116.779F, 123.68F}, {1.0F, 1.0F, 1.0F})},
    };
    return kSpecs;
}

}  // namespace

status validate(const preprocess_spec &spec) {
    auto bad = [](const std::string &what) {
        return invalid_argument("preprocess spec: " + what);
    };
    if (spec.width < 1 || spec.width > kMaxInputSide || spec.height < 1 ||
        spec.height > kMaxInputSide) {
        return bad("input size " + std::to_string(spec.width) + "x" +
                   std::to_string(spec.height) + " is not in 1.." +
                   std::to_string(kMaxInputSide));
    }
    if (spec.crop == crop_mode::center_fraction &&
        !(spec.crop_fraction > 0.0F && spec.crop_fraction <= 1.0F)) {
        return bad("crop_fraction " + std::to_string(spec.crop_fraction) +
                   " is not in (0, 1]");
    }
    for (float s : spec.scale) {
        if (!(std::isfinite(s) && s != 0.0F)) {
            return bad("scale " + std::to_string(s) + " is zero or not finite");
        }
    }
    for (float m : spec.mean) {
        if (!std::isfinite(m))
            return bad("mean is not finite");
    }
    return status::ok();
}

size_t input_floats(const preprocess_spec &spec) {
    return static_cast<size_t>(spec.width) * spec.height * 3;
}

int decode_min_side(const preprocess_spec &spec) {
    int needed = std::max(spec.width, spec.height);
    switch (spec.crop) {
        case crop_mode::none:
            return needed;
        case crop_mode::center_fraction:
            return static_cast<int>(std::ceil(needed / spec.crop_fraction));
        case crop_mode::box:
            return 0;
    }
    return 0;
}

status preprocess_into(const image &img, const preprocess_spec &spec,
                       std::span<float> out) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    FACEVEC_RETURN_IF_ERROR(check_image(img));
    if (out.size() != input_floats(spec)) {
        return invalid_argument("preprocess: output holds " +
                                std::to_string(out.size()) + " floats, " +
                                std::to_string(input_floats(spec)) + " needed");
    }
    auto region = region_for(img, spec);
    if (!region)
        return region.error();

    // Lane s of a resampled pixel is RGB channel s; it goes to the
    // spec's channel c with source_channel(c) == s.
    f32x4 mean = {};
    f32x4 scale = {};
    std::array<size_t, 3> offset{};
    size_t plane = static_cast<size_t>(spec.width) * spec.height;
    for (int c = 0; c < kChannels; ++c) {
        int s = source_channel(spec, c);
        mean[s] = spec.mean[c];
        scale[s] = spec.scale[c];
        offset[s] = spec.layout == tensor_layout::nchw ? c * plane : c;
    }
    float *base = out.data();
    if (spec.layout == tensor_layout::nchw) {
        resample_rows(img, *region, spec.width, spec.height,
                      [&](int y, const int16_t *column, const filter_taps &h) {
                          size_t at = static_cast<size_t>(y) * spec.width;
                          float *planes[kChannels] = {base + offset[0] + at,
                                                      base + offset[1] + at,
                                                      base + offset[2] + at};
                          resample_row_planar(column, h, mean, scale, planes);
                      });
        return status::ok();
    }
    resample(img, *region, spec.width, spec.height,
             [&](int y, const f32x4 *pixels) {
                 size_t at = static_cast<size_t>(y) * spec.width * kChannels;
                 for (int x = 0; x < spec.width; ++x, at += kChannels) {
                     f32x4 value = (pixels[x] - mean) * scale;
                     for (int c = 0; c < kChannels; ++c)
                         base[offset[c] + at] = value[c];
                 }
             });
    return status::ok();
}

result<std::vector<float>> preprocess(const image &img,
                                      const preprocess_spec &spec) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    std::vector<float> out(input_floats(spec));
    FACEVEC_RETURN_IF_ERROR(preprocess_into(img, spec, out));
    return out;
}

result<image> input_to_image(std::span<const float> input,
                             const preprocess_spec &spec) {
    FACEVEC_RETURN_IF_ERROR(validate(spec));
    if (input.size() != input_floats(spec)) {
        return invalid_argument(
            "network input holds " + std::to_string(input.size()) +
            " floats, " + std::to_string(input_floats(spec)) + " expected");
    }
    image out;
    out.width = spec.width;
    out.height = spec.height;
    out.rgb.resize(input.size());
    size_t pixels = static_cast<size_t>(spec.width) * spec.height;
    for (int c = 0; c < 3; ++c) {
        int dst = source_channel(spec, c);
        for (size_t p = 0; p < pixels; ++p) {
            float v = input[tensor_index(spec, c, p)];
            out.rgb[p * 3 + dst] = to_byte(v / spec.scale[c] + spec.mean[c]);
        }
    }
    return out;
}

crop_box center_crop_box(int width, int height, float fraction) {
    int shorter = std::min(width, height);
    int side = static_cast<int>(std::lround(shorter * fraction));
    side = std::clamp(side, 1, std::max(shorter, 1));
    return {(width - side) / 2, (height - side) / 2, side, side};
}

result<image> crop(const image &img, const crop_box &box) {
    if (!box_inside(box, img)) {
        return invalid_argument("crop box " + box_text(box) +
                                " is not inside the image of " +
                                size_text(img));
    }
    image out;
    out.width = box.width;
    out.height = box.height;
    out.rgb.resize(static_cast<size_t>(box.width) * box.height * 3);
    size_t row_bytes = static_cast<size_t>(box.width) * 3;
    for (int y = 0; y < box.height; ++y) {
        const uint8_t *src =
            &img.rgb[(static_cast<size_t>(box.y + y) * img.width + box.x) * 3];
        std::copy(src, src + row_bytes, &out.rgb[y * row_bytes]);
    }
    return out;
}

result<image> resize(const image &img, int width, int height) {
    bool consistent =
        img.width > 0 && img.height > 0 &&
        img.rgb.size() == static_cast<size_t>(img.width) * img.height * 3;
    if (!consistent) {
        return invalid_argument("resize: the image of " + size_text(img) +
                                " is empty or inconsistent");
    }
    if (width < 1 || height < 1 || int64_t{width} * height > kMaxImagePixels) {
        return invalid_argument("resize: target " + std::to_string(width) +
                                "x" + std::to_string(height) +
                                " is empty or over " +
                                std::to_string(kMaxImagePixels) + " pixels");
    }
    image out;
    out.width = width;
    out.height = height;
    out.rgb.resize(static_cast<size_t>(width) * height * kChannels);
    resample(img, {0, 0, img.width, img.height}, width, height,
             [&](int y, const f32x4 *pixels) {
                 uint8_t *dst =
                     &out.rgb[static_cast<size_t>(y) * width * kChannels];
                 int x = write_bytes(pixels, width, dst);
                 for (dst += x * kChannels; x < width; ++x) {
                     for (int c = 0; c < kChannels; ++c)
                         *dst++ = to_byte(pixels[x][c]);
                 }
             });
    return out;
}

const preprocess_spec *find_preprocess_spec(std::string_view name) {
    const auto &specs = builtin_specs();
    auto it = specs.find(name);
    return it == specs.end() ? nullptr : &it->second;
}

std::vector<std::string> preprocess_spec_names() {
    std::vector<std::string> names;
    for (const auto &[name, spec] : builtin_specs())
        names.push_back(name);
    return names;
}

}  // namespace facevec::embed
