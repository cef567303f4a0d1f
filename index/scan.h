// Exact brute-force k-nearest-neighbour scan by squared L2, for small
// query batches.
//
// FAISS's flat search (Debian's build targets generic x86-64) runs a
// scalar loop below 20 queries per call. This scan reads the gallery once
// per batch, computes several queries per pass with vector registers
// (AVX-512, AVX2 or plain C++ chosen at run time) and splits a large
// gallery across OpenMP threads, merging per-thread heaps. Its answer is
// FAISS's: the k smallest distances, nearest first, ties broken by the
// lower row position.
//
// The gallery may be stored as f32, or as bf16 / fp16 half-width copies
// (the scan then ranks by the distance to the rounded rows; callers
// re-rank, see flat_index).
//
// All functions are thread-safe: they only read their inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "index/flat_index.h"

namespace facevec::index {

// Which instruction set the scan uses.
enum class scan_isa { automatic, scalar, avx2, avx512 };

// "automatic", "scalar", "avx2" or "avx512".
const char *scan_isa_name(scan_isa isa);

// Parses a scan_isa_name(); false when `name` is none of them.
bool parse_scan_isa(const std::string &name, scan_isa *isa);

// True when this CPU can run `isa` (automatic and scalar always can).
bool scan_isa_supported(scan_isa isa);

// The instruction set a scan with `requested` runs: `requested` itself
// when it is not automatic, else the one the environment variable
// FACEVEC_SCAN names (scalar|avx2|avx512), else the best this CPU
// supports. A request the CPU cannot run falls back to the best supported
// one (logged as a warning).
scan_isa resolve_scan_isa(scan_isa requested);

struct scan_options {
    scan_isa isa = scan_isa::automatic;
    // OpenMP threads over the gallery; 0: omp_get_max_threads(). Small
    // galleries use one thread whatever this says.
    int threads = 0;
};

// The k nearest of nb base rows for each of nq queries.
//   queries    nq x dim floats, row-major.
//   base       nb x dim elements, row-major: floats for storage_kind::f32,
//              bf16 or fp16 bit patterns (uint16_t) for the others.
//   distances  nq x k floats, out: squared L2, ascending per query.
//   labels     nq x k, out: row positions in base; ties keep the lower
//              position first. When nb < k the tail holds +inf and -1,
//              like FAISS.
// REQUIRES: dim >= 1, k >= 1, finite queries.
void scan_knn(const float *queries, size_t nq, const void *base,
              storage_kind kind, size_t nb, size_t dim, size_t k,
              float *distances, int64_t *labels,
              const scan_options &options = {});

// Squared L2 between two dim-float vectors, accumulated in double in
// index order: one deterministic routine, whatever the CPU or batch.
double exact_l2(const float *a, const float *b, size_t dim);

// Half-width encodings, round to nearest even. REQUIRES: kind is bf16 or
// fp16. Values beyond fp16's range become infinities.
uint16_t encode_half(float value, storage_kind kind);
float decode_half(uint16_t bits, storage_kind kind);

// Encodes n floats into dst[n].
void encode_half(const float *src, size_t n, storage_kind kind, uint16_t *dst);

// Bytes per stored element for `kind`: 4 or 2.
size_t element_bytes(storage_kind kind);

// A plain streaming read of `bytes` bytes (a sum the compiler cannot
// drop), on `threads` OpenMP threads (0: omp_get_max_threads()): the
// memory-bandwidth baseline the scan is measured against. Returns the sum
// of the data as 32-bit words, meaningless except to keep the reads.
uint64_t stream_read(const void *data, size_t bytes, int threads = 0);

}  // namespace facevec::index
