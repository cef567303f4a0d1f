// Internal to the scan: the distance kernels of each instruction set.
//
// A tile kernel computes the squared L2 distances from nq queries to nb
// consecutive base rows, all of them, into out (nq x nb floats,
// row-major). The query loop is register-blocked: each base element
// loaded is used for several queries. Kernels for an instruction set the
// CPU lacks must not be called (see scan.cpp's dispatch).
#pragma once

#include <cstddef>
#include <cstdint>

namespace facevec::index::internal {

// queries: nq x dim floats. base: nb x dim elements of the kernel's kind.
using l2_tile_fn = void (*)(const float *queries, size_t nq, const void *base,
                            size_t nb, size_t dim, float *out);

// One kernel per storage kind.
struct tile_kernels {
    l2_tile_fn f32 = nullptr;
    l2_tile_fn bf16 = nullptr;
    l2_tile_fn fp16 = nullptr;
};

tile_kernels scalar_kernels();
tile_kernels avx2_kernels();    // REQUIRES at call: avx2, fma, f16c
tile_kernels avx512_kernels();  // REQUIRES at call: avx512f, bw, vl

// Bit-level conversions shared by the kernels and the encoders.
inline float bf16_to_float(uint16_t bits) {
    const uint32_t word = static_cast<uint32_t>(bits) << 16;
    float value;
    __builtin_memcpy(&value, &word, sizeof value);
    return value;
}

float fp16_to_float(uint16_t bits);

// Sums bytes / 4 32-bit words. REQUIRES: bytes a multiple of 256.
uint64_t stream_sum_avx512(const void *data, size_t bytes);
uint64_t stream_sum_avx2(const void *data, size_t bytes);
uint64_t stream_sum_scalar(const void *data, size_t bytes);

}  // namespace facevec::index::internal
