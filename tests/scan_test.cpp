// The small-batch scan against FAISS's IndexFlatL2, on every instruction
// set this CPU runs (each forced in turn), odd dims, gallery sizes that
// are not a multiple of any block, ties and both half-width encodings.
#include "index/scan.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <faiss/IndexFlat.h>

namespace facevec::index {
namespace {

constexpr uint32_t kSeed = 20261204;

// Relative distance tolerance between our float sums and FAISS's: both
// are within a few hundred units of roundoff of the exact value.
constexpr float kRelTolerance = 1e-5f;

std::vector<float> random_rows(size_t n, size_t dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n * dim);
    for (float &x : v) {
        x = normal(rng);
    }
    return v;
}

// Face-embedding-like rows: unit vectors in clusters of `per_cluster`
// noisy copies of a centre, as one person's photos are.
std::vector<float> clustered_unit_rows(size_t n, size_t dim, size_t per_cluster,
                                       uint32_t seed) {
    constexpr float kNoise = 0.3f;
    std::vector<float> centres = random_rows(n / per_cluster + 1, dim, seed);
    std::vector<float> noise = random_rows(n, dim, seed + 1);
    std::vector<float> v(n * dim);
    for (size_t i = 0; i < n; ++i) {
        double norm = 0;
        for (size_t d = 0; d < dim; ++d) {
            const float x = centres[(i / per_cluster) * dim + d] +
                            kNoise * noise[i * dim + d];
            v[i * dim + d] = x;
            norm += static_cast<double>(x) * x;
        }
        for (size_t d = 0; d < dim; ++d) {
            v[i * dim + d] /= static_cast<float>(std::sqrt(norm));
        }
    }
    return v;
}

struct knn {
    std::vector<float> distances;
    std::vector<int64_t> labels;
};

knn faiss_knn(const float *queries, size_t nq, const std::vector<float> &base,
              size_t dim, size_t k) {
    faiss::IndexFlatL2 flat(static_cast<faiss::Index::idx_t>(dim));
    flat.add(static_cast<faiss::Index::idx_t>(base.size() / dim), base.data());
    knn r{std::vector<float>(nq * k), std::vector<int64_t>(nq * k)};
    // One query per call keeps FAISS on its exact (non-BLAS) path.
    for (size_t q = 0; q < nq; ++q) {
        flat.search(1, queries + q * dim, static_cast<faiss::Index::idx_t>(k),
                    r.distances.data() + q * k, r.labels.data() + q * k);
    }
    return r;
}

knn our_knn(const float *queries, size_t nq, const void *base,
            storage_kind kind, size_t nb, size_t dim, size_t k, scan_isa isa,
            int threads = 1) {
    knn r{std::vector<float>(nq * k), std::vector<int64_t>(nq * k)};
    scan_options o;
    o.isa = isa;
    o.threads = threads;
    scan_knn(queries, nq, base, kind, nb, dim, k, r.distances.data(),
             r.labels.data(), o);
    return r;
}

// Same ids in the same order and distances within tolerance. A rank may
// hold another id only when FAISS's distances there are a near-tie.
void expect_same_answer(const knn &ours, const knn &ref, size_t nq, size_t k,
                        const std::string &what) {
    for (size_t q = 0; q < nq; ++q) {
        for (size_t i = 0; i < k; ++i) {
            const size_t at = q * k + i;
            const float want = ref.distances[at];
            const float tol = kRelTolerance * std::max(1.0f, want);
            ASSERT_NEAR(ours.distances[at], want, tol)
                << what << " query " << q << " rank " << i;
            if (ours.labels[at] == ref.labels[at]) {
                continue;
            }
            bool near_tie = false;
            for (size_t j = 0; j < k; ++j) {
                near_tie |= ref.labels[q * k + j] == ours.labels[at] &&
                            std::abs(ref.distances[q * k + j] - want) <= tol;
            }
            EXPECT_TRUE(near_tie)
                << what << " query " << q << " rank " << i << ": ours "
                << ours.labels[at] << " faiss " << ref.labels[at];
        }
    }
}

std::vector<scan_isa> supported_isas() {
    std::vector<scan_isa> isas;
    for (scan_isa isa : {scan_isa::scalar, scan_isa::avx2, scan_isa::avx512}) {
        if (scan_isa_supported(isa)) {
            isas.push_back(isa);
        }
    }
    return isas;
}

std::string label(scan_isa isa, size_t dim, size_t nq, size_t k) {
    return std::string(scan_isa_name(isa)) + " dim " + std::to_string(dim) +
           " nq " + std::to_string(nq) + " k " + std::to_string(k);
}

TEST(ScanTest, EveryPathMatchesFaissOnRandomDataAndOddShapes) {
    constexpr size_t kRows = 1003;  // not a multiple of any block
    // 128 and 129: short rows (prefetched, 16-row blocks at batch 1); 300:
    // long rows left to the hardware prefetcher.
    for (size_t dim : {7, 13, 16, 128, 129, 300}) {
        const std::vector<float> base = random_rows(kRows, dim, kSeed);
        const std::vector<float> queries = random_rows(9, dim, kSeed + 7);
        for (size_t nq : {1, 3, 5, 9}) {
            for (size_t k : {1, 10}) {
                const knn ref = faiss_knn(queries.data(), nq, base, dim, k);
                for (scan_isa isa : supported_isas()) {
                    const knn ours =
                        our_knn(queries.data(), nq, base.data(),
                                storage_kind::f32, kRows, dim, k, isa);
                    expect_same_answer(ours, ref, nq, k,
                                       label(isa, dim, nq, k));
                }
            }
        }
    }
}

TEST(ScanTest, EveryPathMatchesFaissOnFaceLikeData) {
    constexpr size_t kRows = 2000;
    constexpr size_t kDim = 128;
    constexpr size_t kPerPerson = 8;
    constexpr size_t kQueries = 6;
    constexpr size_t kK = 20;
    const std::vector<float> base =
        clustered_unit_rows(kRows, kDim, kPerPerson, kSeed);
    const std::vector<float> queries = clustered_unit_rows(
        kQueries * kPerPerson, kDim, kPerPerson, kSeed + 11);
    const knn ref = faiss_knn(queries.data(), kQueries, base, kDim, kK);
    for (scan_isa isa : supported_isas()) {
        const knn ours = our_knn(queries.data(), kQueries, base.data(),
                                 storage_kind::f32, kRows, kDim, kK, isa);
        expect_same_answer(ours, ref, kQueries, kK,
                           label(isa, kDim, kQueries, kK));
    }
}

TEST(ScanTest, TiesKeepTheLowerPositionFirstLikeFaiss) {
    // Rows 0..9 distinct; then every row repeated three times, shuffled
    // into later positions, so each distance appears four times.
    constexpr size_t kDim = 13;
    constexpr size_t kDistinct = 10;
    constexpr size_t kCopies = 4;
    std::vector<float> base = random_rows(kDistinct, kDim, kSeed);
    for (size_t c = 1; c < kCopies; ++c) {
        for (size_t i = 0; i < kDistinct; ++i) {
            const size_t from = (i * 7 + c) % kDistinct;
            base.insert(base.end(), base.begin() + from * kDim,
                        base.begin() + (from + 1) * kDim);
        }
    }
    const size_t rows = base.size() / kDim;
    // The first query is a stored row: distance 0, four times.
    std::vector<float> queries(base.begin(), base.begin() + kDim);
    const std::vector<float> other = random_rows(2, kDim, kSeed + 3);
    queries.insert(queries.end(), other.begin(), other.end());
    const size_t nq = queries.size() / kDim;

    for (size_t k : {1, 3, 4, 9, 40}) {
        const knn ref = faiss_knn(queries.data(), nq, base, kDim, k);
        for (scan_isa isa : supported_isas()) {
            const knn ours = our_knn(queries.data(), nq, base.data(),
                                     storage_kind::f32, rows, kDim, k, isa);
            EXPECT_EQ(ours.labels, ref.labels) << label(isa, kDim, nq, k);
            EXPECT_EQ(ours.distances[0], 0.0f);
        }
    }
}

// Every row's distance to a query, indexed by row: a scan with k = nb.
std::vector<float> distance_by_row(const knn &all, size_t query, size_t nb) {
    std::vector<float> by_row(nb, -1.0f);
    for (size_t i = 0; i < nb; ++i) {
        const int64_t row = all.labels[query * nb + i];
        by_row[static_cast<size_t>(row)] = all.distances[query * nb + i];
    }
    return by_row;
}

TEST(ScanTest, DistanceIsTheSameAloneInAnyBatchAndAtAnyRowPosition) {
    // 37 rows: full blocks and a short last block for every block shape.
    constexpr size_t kRows = 37;
    constexpr size_t kShift = 5;
    constexpr size_t kMaxBatch = 6;
    for (size_t dim : {13, 128, 300}) {
        const std::vector<float> base = random_rows(kRows, dim, kSeed);
        const std::vector<float> queries =
            random_rows(kMaxBatch, dim, kSeed + 2);
        for (scan_isa isa : supported_isas()) {
            const knn alone =
                our_knn(queries.data(), 1, base.data(), storage_kind::f32,
                        kRows, dim, kRows, isa);
            const std::vector<float> want = distance_by_row(alone, 0, kRows);
            for (size_t nq = 2; nq <= kMaxBatch; ++nq) {
                const knn batch =
                    our_knn(queries.data(), nq, base.data(), storage_kind::f32,
                            kRows, dim, kRows, isa);
                EXPECT_EQ(distance_by_row(batch, 0, kRows), want)
                    << label(isa, dim, nq, kRows);
            }
            // The same rows seen from kShift rows later land in other
            // blocks and block positions.
            const size_t rest = kRows - kShift;
            const knn shifted =
                our_knn(queries.data(), 1, base.data() + kShift * dim,
                        storage_kind::f32, rest, dim, rest, isa);
            const std::vector<float> got = distance_by_row(shifted, 0, rest);
            EXPECT_EQ(got,
                      std::vector<float>(want.begin() + kShift, want.end()))
                << label(isa, dim, 1, rest) << " shifted";
        }
    }
}

TEST(ScanTest, TwoThreadsGiveTheOneThreadAnswer) {
    // Above the parallel threshold (2 MiB): 8200 x 129 floats.
    constexpr size_t kRows = 8200;
    constexpr size_t kDim = 129;
    constexpr size_t kQueries = 5;
    constexpr size_t kK = 10;
    std::vector<float> base = random_rows(kRows, kDim, kSeed);
    // A tie across the two threads' halves: the last row copies row 3.
    std::copy_n(base.begin() + 3 * kDim, kDim, base.end() - kDim);
    std::vector<float> queries(base.begin() + 3 * kDim,
                               base.begin() + 4 * kDim);
    const std::vector<float> more = random_rows(kQueries - 1, kDim, kSeed + 5);
    queries.insert(queries.end(), more.begin(), more.end());

    const knn ref = faiss_knn(queries.data(), kQueries, base, kDim, kK);
    for (scan_isa isa : supported_isas()) {
        const knn one = our_knn(queries.data(), kQueries, base.data(),
                                storage_kind::f32, kRows, kDim, kK, isa, 1);
        const knn two = our_knn(queries.data(), kQueries, base.data(),
                                storage_kind::f32, kRows, kDim, kK, isa, 2);
        EXPECT_EQ(one.labels, two.labels) << scan_isa_name(isa);
        EXPECT_EQ(one.distances, two.distances) << scan_isa_name(isa);
        expect_same_answer(two, ref, kQueries, kK, scan_isa_name(isa));
        EXPECT_EQ(two.labels[0], 3);
        EXPECT_EQ(two.labels[1], static_cast<int64_t>(kRows - 1));
    }
}

TEST(ScanTest, HalfWidthRowsMatchFaissOnTheDecodedRows) {
    constexpr size_t kRows = 777;
    constexpr size_t kQueries = 5;
    constexpr size_t kK = 10;
    for (storage_kind kind : {storage_kind::bf16, storage_kind::fp16}) {
        for (size_t dim : {7, 33, 128, 600}) {
            const std::vector<float> rows = random_rows(kRows, dim, kSeed);
            std::vector<uint16_t> half(rows.size());
            encode_half(rows.data(), rows.size(), kind, half.data());
            std::vector<float> decoded(rows.size());
            for (size_t i = 0; i < rows.size(); ++i) {
                decoded[i] = decode_half(half[i], kind);
            }
            const std::vector<float> queries =
                random_rows(kQueries, dim, kSeed + 1);
            const knn ref =
                faiss_knn(queries.data(), kQueries, decoded, dim, kK);
            for (scan_isa isa : supported_isas()) {
                const knn ours = our_knn(queries.data(), kQueries, half.data(),
                                         kind, kRows, dim, kK, isa);
                expect_same_answer(
                    ours, ref, kQueries, kK,
                    std::string(kind == storage_kind::bf16 ? "bf16 "
                                                           : "fp16 ") +
                        label(isa, dim, kQueries, kK));
            }
        }
    }
}

TEST(ScanTest, FewerRowsThanKArePaddedLikeFaiss) {
    constexpr size_t kDim = 8;
    constexpr size_t kRows = 3;
    constexpr size_t kK = 5;
    const std::vector<float> base = random_rows(kRows, kDim, kSeed);
    const std::vector<float> query = random_rows(1, kDim, kSeed + 1);
    const knn ref = faiss_knn(query.data(), 1, base, kDim, kK);
    for (scan_isa isa : supported_isas()) {
        const knn ours = our_knn(query.data(), 1, base.data(),
                                 storage_kind::f32, kRows, kDim, kK, isa);
        EXPECT_EQ(ours.labels, ref.labels);
        for (size_t i = kRows; i < kK; ++i) {
            EXPECT_EQ(ours.labels[i], -1);
            EXPECT_TRUE(std::isinf(ours.distances[i]));
        }
    }
}

TEST(ScanTest, EmptyGalleryGivesOnlyPadding) {
    const std::vector<float> query(4, 1.0f);
    const knn ours = our_knn(query.data(), 1, nullptr, storage_kind::f32, 0, 4,
                             2, scan_isa::automatic);
    EXPECT_EQ(ours.labels, (std::vector<int64_t>{-1, -1}));
}

TEST(ScanTest, Fp16EncodingRoundsToNearestEven) {
    const storage_kind k = storage_kind::fp16;
    EXPECT_EQ(encode_half(1.0f, k), 0x3C00);
    EXPECT_EQ(encode_half(-2.0f, k), 0xC000);
    EXPECT_EQ(encode_half(65504.0f, k), 0x7BFF);
    EXPECT_EQ(encode_half(65519.0f, k), 0x7BFF);
    EXPECT_EQ(encode_half(65520.0f, k), 0x7C00);  // rounds to infinity
    EXPECT_EQ(encode_half(std::ldexp(1.0f, -24), k), 0x0001);
    EXPECT_EQ(encode_half(std::ldexp(1.0f, -25), k), 0x0000);  // tie: even
    EXPECT_EQ(encode_half(std::ldexp(1.5f, -25), k), 0x0001);
    EXPECT_EQ(encode_half(1.0f + std::ldexp(1.0f, -11), k), 0x3C00);
    EXPECT_EQ(encode_half(1.0f + 3 * std::ldexp(1.0f, -11), k), 0x3C02);
}

TEST(ScanTest, Fp16DecodeThenEncodeIsTheIdentity) {
    for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
        const auto h = static_cast<uint16_t>(bits);
        const float v = decode_half(h, storage_kind::fp16);
        if (std::isnan(v)) {
            continue;
        }
        ASSERT_EQ(encode_half(v, storage_kind::fp16), h) << "bits " << bits;
    }
    EXPECT_EQ(decode_half(0x3555, storage_kind::fp16), 0.333251953125f);
    EXPECT_EQ(decode_half(0x0001, storage_kind::fp16), std::ldexp(1.0f, -24));
}

TEST(ScanTest, Bf16EncodingRoundsToNearestEven) {
    const storage_kind k = storage_kind::bf16;
    EXPECT_EQ(encode_half(1.0f, k), 0x3F80);
    EXPECT_EQ(encode_half(1.0f + std::ldexp(1.0f, -8), k), 0x3F80);  // tie
    EXPECT_EQ(encode_half(1.0f + 3 * std::ldexp(1.0f, -8), k), 0x3F82);
    EXPECT_EQ(decode_half(0xC040, k), -3.0f);
    for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
        const auto h = static_cast<uint16_t>(bits);
        const float v = decode_half(h, k);
        if (!std::isnan(v)) {
            ASSERT_EQ(encode_half(v, k), h) << "bits " << bits;
        }
    }
}

TEST(ScanTest, IsaNamesParseBackAndUnknownNamesAreRefused) {
    for (scan_isa isa : {scan_isa::automatic, scan_isa::scalar, scan_isa::avx2,
                         scan_isa::avx512}) {
        scan_isa parsed = scan_isa::automatic;
        ASSERT_TRUE(parse_scan_isa(scan_isa_name(isa), &parsed));
        EXPECT_EQ(parsed, isa);
    }
    scan_isa untouched = scan_isa::avx2;
    EXPECT_FALSE(parse_scan_isa("avx3", &untouched));
    EXPECT_EQ(untouched, scan_isa::avx2);
}

TEST(ScanTest, EnvironmentForcesThePathAndBadValuesAreIgnored) {
    ASSERT_EQ(setenv("FACEVEC_SCAN", "scalar", 1), 0);
    EXPECT_EQ(resolve_scan_isa(scan_isa::automatic), scan_isa::scalar);
    // An explicit request wins over the environment.
    EXPECT_EQ(resolve_scan_isa(scan_isa::scalar), scan_isa::scalar);

    ASSERT_EQ(setenv("FACEVEC_SCAN", "fastest", 1), 0);
    const scan_isa best = resolve_scan_isa(scan_isa::automatic);
    EXPECT_NE(best, scan_isa::automatic);
    EXPECT_TRUE(scan_isa_supported(best));
    ASSERT_EQ(unsetenv("FACEVEC_SCAN"), 0);
    EXPECT_EQ(resolve_scan_isa(scan_isa::automatic), best);
}

TEST(ScanTest, ExactDistanceIsTheDoubleSumOfSquares) {
    const std::vector<float> a = {1.0f, 2.0f, 3.0f};
    const std::vector<float> b = {1.5f, 0.0f, -1.0f};
    EXPECT_DOUBLE_EQ(exact_l2(a.data(), b.data(), a.size()), 0.25 + 4.0 + 16.0);
    EXPECT_EQ(exact_l2(a.data(), a.data(), a.size()), 0.0);
}

TEST(ScanTest, StreamReadSumsEveryWord) {
    constexpr size_t kWords = 4096;
    const std::vector<uint32_t> words(kWords, 1);
    EXPECT_EQ(stream_read(words.data(), kWords * sizeof(uint32_t), 1), kWords);
}

}  // namespace
}  // namespace facevec::index
