// Portable kernels: plain C++ that any x86-64 (or other) CPU runs. The
// reference path of the scan and the fallback when the CPU has neither
// AVX2 nor AVX-512.
#include <cstring>

#include "index/scan_kernels.h"

namespace facevec::index::internal {
namespace {

// Queries handled together for each base row read.
constexpr size_t kQueryBlock = 4;

float to_float(float v) {
    return v;
}
float to_float_bf16(uint16_t v) {
    return bf16_to_float(v);
}

// Distances from up to kQueryBlock queries to every row; Decode turns a
// stored element into a float.
template <typename Element, float (*Decode)(Element)>
void tile(const float *queries, size_t nq, const void *base, size_t nb,
          size_t dim, float *out) {
    const auto *rows = static_cast<const Element *>(base);
    for (size_t q0 = 0; q0 < nq; q0 += kQueryBlock) {
        const size_t qb = nq - q0 < kQueryBlock ? nq - q0 : kQueryBlock;
        for (size_t r = 0; r < nb; ++r) {
            const Element *row = rows + r * dim;
            float sums[kQueryBlock] = {};
            for (size_t d = 0; d < dim; ++d) {
                const float y = Decode(row[d]);
                for (size_t q = 0; q < qb; ++q) {
                    const float diff = y - queries[(q0 + q) * dim + d];
                    sums[q] += diff * diff;
                }
            }
            for (size_t q = 0; q < qb; ++q) {
                out[(q0 + q) * nb + r] = sums[q];
            }
        }
    }
}

}  // namespace

float fp16_to_float(uint16_t bits) {
    constexpr uint32_t kSignShift = 16;
    constexpr uint32_t kExponentMask = 0x7C00;
    constexpr uint32_t kMantissaMask = 0x03FF;
    constexpr uint32_t kMantissaBits = 10;
    constexpr uint32_t kFloatMantissaBits = 23;
    constexpr uint32_t kBiasDelta = 127 - 15;
    constexpr uint32_t kFloatInfExponent = 0xFF;

    const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << kSignShift;
    const uint32_t exponent = (bits & kExponentMask) >> kMantissaBits;
    uint32_t mantissa = bits & kMantissaMask;
    uint32_t word;
    if (exponent == 0x1F) {  // infinity or NaN
        word = sign | (kFloatInfExponent << kFloatMantissaBits) |
               (mantissa << (kFloatMantissaBits - kMantissaBits));
    } else if (exponent != 0) {  // normal
        word = sign | ((exponent + kBiasDelta) << kFloatMantissaBits) |
               (mantissa << (kFloatMantissaBits - kMantissaBits));
    } else if (mantissa == 0) {  // zero
        word = sign;
    } else {  // subnormal: normalise the mantissa
        uint32_t e = kBiasDelta + 1;
        while ((mantissa & (1u << kMantissaBits)) == 0) {
            mantissa <<= 1;
            --e;
        }
        mantissa &= kMantissaMask;
        word = sign | (e << kFloatMantissaBits) |
               (mantissa << (kFloatMantissaBits - kMantissaBits));
    }
    float value;
    std::memcpy(&value, &word, sizeof value);
    return value;
}

tile_kernels scalar_kernels() {
    tile_kernels k;
    k.f32 = &tile<float, to_float>;
    k.bf16 = &tile<uint16_t, to_float_bf16>;
    k.fp16 = &tile<uint16_t, fp16_to_float>;
    return k;
}

uint64_t stream_sum_scalar(const void *data, size_t bytes) {
    const auto *words = static_cast<const uint32_t *>(data);
    uint64_t sum = 0;
    for (size_t i = 0; i < bytes / sizeof(uint32_t); ++i) {
        sum += words[i];
    }
    return sum;
}

}  // namespace facevec::index::internal
