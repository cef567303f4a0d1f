// flat_index: per-person top-k, removal, batch invariance, exactness
// against FAISS's IndexFlatL2 and the half-width storages.
#include "index/flat_index.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <faiss/IndexFlat.h>

#include "index/scan.h"

namespace facevec::index {
namespace {

constexpr uint32_t kSeed = 4122026;

std::vector<float> random_rows(size_t n, size_t dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n * dim);
    for (float &x : v) {
        x = normal(rng);
    }
    return v;
}

// A gallery of n faces, face ids 1000 + i, person "p<i / per_person>".
struct gallery {
    size_t dim;
    std::vector<float> rows;
    std::vector<uint64_t> ids;
    std::vector<std::string> persons;
};

gallery make_gallery(size_t n, size_t dim, size_t per_person, uint32_t seed) {
    constexpr uint64_t kFirstId = 1000;
    gallery g{dim, random_rows(n, dim, seed), {}, {}};
    for (size_t i = 0; i < n; ++i) {
        g.ids.push_back(kFirstId + i);
        g.persons.push_back("p" + std::to_string(i / per_person));
    }
    return g;
}

void add_all(flat_index &index, const gallery &g) {
    index.add(g.ids, g.persons, g.rows.data());
}

// Searches the queries in batches of `batch` and concatenates.
std::vector<std::vector<hit>> search_in_batches(const flat_index &index,
                                                const std::vector<float> &q,
                                                size_t batch, size_t k,
                                                bool persons) {
    const size_t dim = index.dim();
    const size_t n = q.size() / dim;
    std::vector<std::vector<hit>> all;
    for (size_t start = 0; start < n; start += batch) {
        const size_t count = std::min(batch, n - start);
        auto part = persons
                        ? index.search_persons(q.data() + start * dim, count, k)
                        : index.search_faces(q.data() + start * dim, count, k);
        all.insert(all.end(), part.begin(), part.end());
    }
    return all;
}

void expect_same_hits(const std::vector<std::vector<hit>> &a,
                      const std::vector<std::vector<hit>> &b,
                      const std::string &what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t q = 0; q < a.size(); ++q) {
        ASSERT_EQ(a[q].size(), b[q].size()) << what << " query " << q;
        for (size_t i = 0; i < a[q].size(); ++i) {
            EXPECT_EQ(a[q][i].face, b[q][i].face)
                << what << " query " << q << " rank " << i;
            EXPECT_EQ(a[q][i].person, b[q][i].person) << what;
            EXPECT_EQ(a[q][i].distance, b[q][i].distance) << what;
        }
    }
}

TEST(FlatIndexTest, EmptyIndexAnswersEveryQueryWithNoHits) {
    flat_index index(4);
    const std::vector<float> q(3 * 4, 0.5f);
    const auto r = index.search_persons(q.data(), 3, 5);
    ASSERT_EQ(r.size(), 3u);
    for (const auto &hits : r) {
        EXPECT_TRUE(hits.empty());
    }
    EXPECT_EQ(index.size(), 0u);
    EXPECT_EQ(index.person_count(), 0u);
}

TEST(FlatIndexTest, PersonsAreRankedByTheirNearestFace) {
    // Along one axis: alice has faces at 1, 2, 3; bob at 5; carol at 9.
    flat_index index(2);
    const std::vector<float> rows = {1, 0, 2, 0, 3, 0, 5, 0, 9, 0};
    const std::vector<uint64_t> ids = {11, 12, 13, 21, 31};
    const std::vector<std::string> who = {"alice", "alice", "alice", "bob",
                                          "carol"};
    index.add(ids, who, rows.data());
    const std::vector<float> q = {2.4f, 0};

    const auto r = index.search_persons(q.data(), 1, 2);
    ASSERT_EQ(r[0].size(), 2u);
    EXPECT_EQ(index.person_name(r[0][0].person), "alice");
    EXPECT_EQ(r[0][0].face, 12u);
    EXPECT_NEAR(r[0][0].distance, 0.16f, 1e-6f);
    EXPECT_EQ(index.person_name(r[0][1].person), "bob");
    EXPECT_EQ(r[0][1].face, 21u);

    // Face-level search does not group.
    const auto f = index.search_faces(q.data(), 1, 3);
    ASSERT_EQ(f[0].size(), 3u);
    EXPECT_EQ(f[0][0].face, 12u);
    EXPECT_EQ(f[0][1].face, 13u);
    EXPECT_EQ(f[0][2].face, 11u);
}

TEST(FlatIndexTest, KLargerThanStoredReturnsWhatIsStored) {
    const gallery g = make_gallery(30, 8, 3, kSeed);
    flat_index index(8);
    add_all(index, g);
    const std::vector<float> q = random_rows(2, 8, kSeed + 1);

    const auto persons = index.search_persons(q.data(), 2, 100);
    for (const auto &hits : persons) {
        EXPECT_EQ(hits.size(), 10u);
        for (size_t i = 1; i < hits.size(); ++i) {
            EXPECT_LE(hits[i - 1].distance, hits[i].distance);
        }
    }
    const auto faces = index.search_faces(q.data(), 2, 100);
    for (const auto &hits : faces) {
        EXPECT_EQ(hits.size(), 30u);
    }
}

TEST(FlatIndexTest, ManyFacesOfOnePersonDoNotHideTheOthers) {
    // 200 faces of "near" all closer than any other person: the face-level
    // candidate list must grow until k persons are found.
    constexpr size_t kDim = 16;
    constexpr size_t kNear = 200;
    constexpr size_t kOthers = 50;
    std::vector<float> rows = random_rows(kNear + kOthers, kDim, kSeed);
    std::vector<uint64_t> ids;
    std::vector<std::string> who;
    for (size_t i = 0; i < kNear + kOthers; ++i) {
        const float scale = i < kNear ? 0.01f : 1.0f;
        for (size_t d = 0; d < kDim; ++d) {
            rows[i * kDim + d] *= scale;
        }
        ids.push_back(i + 1);
        who.push_back(i < kNear ? "near" : "other" + std::to_string(i));
    }
    flat_index index(kDim);
    index.add(ids, who, rows.data());
    const std::vector<float> q(kDim, 0.0f);

    const auto r = index.search_persons(q.data(), 1, 5);
    ASSERT_EQ(r[0].size(), 5u);
    EXPECT_EQ(index.person_name(r[0][0].person), "near");
    for (size_t i = 1; i < 5; ++i) {
        EXPECT_NE(index.person_name(r[0][i].person), "near");
    }
}

TEST(FlatIndexTest, RemovedFacesAreNeverReturned) {
    const gallery g = make_gallery(100, 8, 4, kSeed);
    flat_index index(8);
    add_all(index, g);
    // The query is face 1000's vector; then face 1000 goes.
    const std::vector<float> q(g.rows.begin(), g.rows.begin() + 8);
    ASSERT_EQ(index.search_faces(q.data(), 1, 1)[0][0].face, 1000u);

    const std::vector<uint64_t> gone = {1000, 1001, 1002, 1003, 999999};
    EXPECT_EQ(index.remove(gone), 4u);  // the unknown id is ignored
    EXPECT_EQ(index.size(), 96u);
    EXPECT_EQ(index.person_count(), 24u);  // p0 had faces 1000..1003
    EXPECT_EQ(index.remove(gone), 0u);

    const auto r = index.search_faces(q.data(), 1, 96);
    ASSERT_EQ(r[0].size(), 96u);
    for (const hit &h : r[0]) {
        EXPECT_GT(h.face, 1003u);
        EXPECT_NE(index.person_name(h.person), "p0");
    }

    // The surviving rows still answer exactly: a survivor finds itself.
    const std::vector<float> q50(g.rows.begin() + 50 * 8,
                                 g.rows.begin() + 51 * 8);
    const auto self = index.search_faces(q50.data(), 1, 1);
    EXPECT_EQ(self[0][0].face, 1050u);
    EXPECT_EQ(self[0][0].distance, 0.0f);

    // A removed id can be added again.
    index.add(std::span<const uint64_t>(gone.data(), 1),
              std::span<const std::string>(g.persons.data(), 1), q.data());
    EXPECT_EQ(index.search_faces(q.data(), 1, 1)[0][0].face, 1000u);
    EXPECT_EQ(index.person_count(), 25u);
}

TEST(FlatIndexTest, AnswersMatchFaissExactly) {
    constexpr size_t kDim = 64;
    constexpr size_t kK = 10;
    const gallery g = make_gallery(3000, kDim, 1, kSeed);
    flat_index index(kDim);
    add_all(index, g);
    faiss::IndexFlatL2 ref(kDim);
    ref.add(3000, g.rows.data());

    const std::vector<float> q = random_rows(100, kDim, kSeed + 2);
    for (size_t batch : {1, 100}) {
        const auto ours = search_in_batches(index, q, batch, kK, false);
        for (size_t i = 0; i < 100; ++i) {
            std::vector<float> d(kK);
            std::vector<faiss::Index::idx_t> l(kK);
            ref.search(1, q.data() + i * kDim, kK, d.data(), l.data());
            ASSERT_EQ(ours[i].size(), kK);
            for (size_t j = 0; j < kK; ++j) {
                EXPECT_EQ(ours[i][j].face, 1000u + l[j]) << "query " << i;
                EXPECT_NEAR(ours[i][j].distance, d[j], 1e-4f * d[j]);
            }
        }
    }
}

TEST(FlatIndexTest, QueryAnswerIsTheSameAloneAndInAnyBatch) {
    // 19 and 20 straddle FAISS's own switch to BLAS at 20 queries. Each
    // batch size runs on facevec's scan (default threshold) and on FAISS
    // (threshold 1), and must give the single-query scan answer.
    constexpr size_t kDim = 48;
    constexpr size_t kQueries = 1000;
    constexpr size_t kK = 5;
    const gallery g = make_gallery(4000, kDim, 4, kSeed);
    flat_index index(kDim);
    add_all(index, g);
    // One thread: thousands of tiny FAISS calls on a shared machine wait
    // for a second core; threads do not change answers (see scan_test).
    index.set_threads(1);
    // Queries on or near stored faces, so ties at zero distance and
    // near-ties occur.
    std::vector<float> q = random_rows(kQueries, kDim, kSeed + 3);
    for (size_t i = 0; i < kQueries; ++i) {
        const float scale = i % 3 == 0 ? 0.0f : 1e-3f;
        for (size_t d = 0; d < kDim; ++d) {
            q[i * kDim + d] =
                g.rows[(i * 7 % 4000) * kDim + d] + scale * q[i * kDim + d];
        }
    }

    for (bool persons : {true, false}) {
        const auto alone = search_in_batches(index, q, 1, kK, persons);
        for (size_t faiss_from : {size_t{2048}, size_t{1}}) {
            index.set_faiss_min_batch(faiss_from);
            for (size_t batch : {1, 19, 20, 64, 1000}) {
                expect_same_hits(
                    search_in_batches(index, q, batch, kK, persons), alone,
                    "batch " + std::to_string(batch) + " faiss from " +
                        std::to_string(faiss_from) +
                        (persons ? " persons" : " faces"));
            }
        }
        index.set_faiss_min_batch(2048);
        for (const auto &hits : alone) {
            ASSERT_EQ(hits.size(), kK);
            for (const hit &h : hits) {
                EXPECT_GE(h.distance, 0.0f);
            }
        }
    }
}

TEST(FlatIndexTest, DuplicateVectorsAreOrderedByFaceId) {
    constexpr size_t kDim = 7;
    const std::vector<float> v = random_rows(1, kDim, kSeed);
    std::vector<float> rows;
    for (int i = 0; i < 5; ++i) {
        rows.insert(rows.end(), v.begin(), v.end());
    }
    const std::vector<uint64_t> ids = {50, 10, 40, 20, 30};
    const std::vector<std::string> who = {"a", "b", "c", "d", "e"};
    flat_index index(kDim);
    index.add(ids, who, rows.data());

    for (size_t batch_copies : {1, 70}) {
        std::vector<float> q;
        for (size_t i = 0; i < batch_copies; ++i) {
            q.insert(q.end(), v.begin(), v.end());
        }
        const auto r = index.search_faces(q.data(), batch_copies, 3);
        for (const auto &hits : r) {
            ASSERT_EQ(hits.size(), 3u);
            EXPECT_EQ(hits[0].face, 10u);
            EXPECT_EQ(hits[1].face, 20u);
            EXPECT_EQ(hits[2].face, 30u);
            EXPECT_EQ(hits[0].distance, 0.0f);
        }
    }
}

TEST(FlatIndexTest, EveryScanPathGivesTheSameAnswer) {
    constexpr size_t kDim = 129;
    constexpr size_t kK = 8;
    const gallery g = make_gallery(2000, kDim, 5, kSeed);
    const std::vector<float> q = random_rows(10, kDim, kSeed + 4);
    flat_index index(kDim);
    add_all(index, g);
    index.set_scan_isa(scan_isa::scalar);
    const auto want = index.search_persons(q.data(), 10, kK);
    for (scan_isa isa : {scan_isa::avx2, scan_isa::avx512}) {
        if (!scan_isa_supported(isa)) {
            continue;
        }
        index.set_scan_isa(isa);
        expect_same_hits(index.search_persons(q.data(), 10, kK), want,
                         scan_isa_name(isa));
    }
}

TEST(FlatIndexTest, HalfWidthStorageReRanksToTheF32Answer) {
    constexpr size_t kDim = 128;
    constexpr size_t kRows = 5000;
    constexpr size_t kQueries = 50;
    constexpr size_t kK = 10;
    const gallery g = make_gallery(kRows, kDim, 1, kSeed);
    flat_index exact(kDim);
    add_all(exact, g);
    const std::vector<float> q = random_rows(kQueries, kDim, kSeed + 5);
    const auto want = exact.search_faces(q.data(), kQueries, kK);

    for (storage_kind kind : {storage_kind::bf16, storage_kind::fp16}) {
        flat_index compact(kDim, kind);
        add_all(compact, g);
        EXPECT_EQ(compact.storage(), kind);
        // Recall@1 and @10 against f32 are 1.0: same faces, same order.
        for (size_t batch : {1, 7}) {
            expect_same_hits(search_in_batches(compact, q, batch, kK, false),
                             want,
                             kind == storage_kind::bf16 ? "bf16" : "fp16");
        }
        // Removal keeps the compact copy in step.
        const std::vector<uint64_t> gone = {want[0][0].face};
        ASSERT_EQ(compact.remove(gone), 1u);
        const auto after = compact.search_faces(q.data(), 1, 1);
        EXPECT_EQ(after[0][0].face, want[0][1].face);
    }
}

TEST(FlatIndexTest, ConcurrentSearchesGiveTheSerialAnswers) {
    constexpr size_t kDim = 32;
    constexpr size_t kThreads = 4;
    constexpr size_t kFaissFrom = 64;
    const gallery g = make_gallery(3000, kDim, 3, kSeed);
    flat_index index(kDim);
    add_all(index, g);
    const std::vector<float> q = random_rows(80, kDim, kSeed + 6);
    const auto want = search_in_batches(index, q, 1, 5, true);
    index.set_faiss_min_batch(kFaissFrom);

    std::vector<std::vector<std::vector<hit>>> got(kThreads);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < kThreads; ++t) {
        // Half the threads take the FAISS path (batch 80), half our scan.
        threads.emplace_back([&, t] {
            got[t] = search_in_batches(index, q, t % 2 == 0 ? 1 : 80, 5, true);
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    for (size_t t = 0; t < kThreads; ++t) {
        expect_same_hits(got[t], want, "thread " + std::to_string(t));
    }
}

TEST(FlatIndexDeathTest, AddingAHeldIdAborts) {
    flat_index index(2);
    const std::vector<float> v = {1, 2};
    const std::vector<uint64_t> ids = {7};
    const std::vector<std::string> who = {"x"};
    index.add(ids, who, v.data());
    EXPECT_DEATH(index.add(ids, who, v.data()), "face 7 already held");
}

TEST(FlatIndexDeathTest, UnknownPersonOrdinalAborts) {
    flat_index index(2);
    EXPECT_DEATH((void)index.person_name(3), "unknown ordinal 3");
}

}  // namespace
}  // namespace facevec::index
