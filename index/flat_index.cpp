#include "index/flat_index.h"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <exception>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <faiss/IndexFlat.h>
#include <faiss/impl/IDSelector.h>

#include "common/log.h"
#include "index/scan.h"

namespace facevec::index {
namespace {

// Face-level candidates fetched per person wanted in the first round; a
// query whose answer cannot be certified from them asks for twice as many.
constexpr size_t kCandidateFactor = 2;
constexpr size_t kMinExtraCandidates = 16;
constexpr size_t kGrowthFactor = 2;

// Once a query needs more than this fraction of the gallery as
// candidates, every row is ranked exactly instead.
constexpr size_t kExhaustiveDivisor = 2;

// Batches of at least this many queries go to FAISS (BLAS matrix
// product), smaller ones to our scan. Measured with scan_bench on this
// project's 2-core Zen 4, one thread, CPU ms per call (the machine was
// shared, so CPU time rather than wall time): 200k x 512, batch 64: scan
// 95 vs FAISS 221, batch 256: 346 vs 580; 50k x 512, batch 1024: 444 vs
// 534, batch 4096: 2178 vs 2201 (a tie); at dim 128 the scan led up to
// 4096 (611 vs 711). The crossover was the same at 50k and 200k rows, so
// the gallery size decides only the threads (see scan.cpp).
constexpr size_t kFaissMinBatch = 2048;

// Error bounds on float distances: a sum of d terms in float is within
// about d units of roundoff of the exact sum; we allow twice that plus a
// few terms for the subtraction and the norms.
constexpr double kExtraTerms = 4;
constexpr double kRoundoffMargin = 2;

// Where a round's candidate distances came from, which decides how far
// they may be from the exact ones.
enum class source { scan, faiss, scan_half };

// Partial sums that squared_norm keeps apart, so the additions do not
// wait for each other.
constexpr size_t kNormLanes = 8;

// In double, so no finite float overflows; NaN or Inf when v holds one.
double squared_norm(const float *v, size_t dim) {
    double lanes[kNormLanes] = {};
    size_t d = 0;
    for (; d + kNormLanes <= dim; d += kNormLanes) {
        for (size_t l = 0; l < kNormLanes; ++l) {
            lanes[l] += static_cast<double>(v[d + l]) * v[d + l];
        }
    }
    for (; d < dim; ++d) {
        lanes[0] += static_cast<double>(v[d]) * v[d];
    }
    double sum = 0;
    for (double lane : lanes) {
        sum += lane;
    }
    return sum;
}

struct round_result {
    source from = source::scan;
    std::vector<float> distances;  // nq x kk
    std::vector<int64_t> labels;   // nq x kk, row positions
};

}  // namespace

struct flat_index::impl {
    uint32_t dim;
    storage_kind storage;
    faiss::IndexFlatL2 flat;

    std::vector<uint64_t> ids;      // row position -> face id
    std::vector<uint32_t> persons;  // row position -> person ordinal
    std::unordered_map<uint64_t, size_t> position_of;

    // Limitation: a removed person keeps its ordinal and name.
    std::vector<std::string> person_names;
    std::unordered_map<std::string, uint32_t> ordinal_of;
    std::vector<uint64_t> person_faces;  // live faces per ordinal
    uint64_t live_persons = 0;

    // bf16 / fp16 copy of the rows (size x dim) and the largest L2 norm
    // of a row's rounding error, for the re-ranking bound.
    std::vector<uint16_t> half;
    double max_half_error = 0;
    // Largest squared norm ever added: bounds FAISS's BLAS rounding.
    double max_sq_norm = 0;

    int threads = 0;
    scan_isa isa = scan_isa::automatic;
    size_t faiss_min_batch = kFaissMinBatch;

    impl(uint32_t d, storage_kind s) : dim(d), storage(s), flat(d) {}

    const float *row(size_t position) const {
        return flat.get_xb() + position * dim;
    }
    int search_threads() const {
        return threads > 0 ? threads : omp_get_max_threads();
    }

    uint32_t ordinal_for(const std::string &person);
    round_result candidates(const float *queries, size_t nq, size_t kk) const;
    bool faiss_search(const float *queries, size_t nq, size_t kk,
                      round_result &out) const;
    double unseen_lower_bound(source from, float last,
                              const float *query) const;
    bool finish(const float *query, const float *dist, const int64_t *labels,
                size_t kk, source from, size_t k, bool group, size_t need,
                std::vector<hit> &out) const;
    std::vector<std::vector<hit>> search(const float *queries, size_t n,
                                         size_t k, bool group) const;
};

uint32_t flat_index::impl::ordinal_for(const std::string &person) {
    auto [it, inserted] = ordinal_of.try_emplace(
        person, static_cast<uint32_t>(person_names.size()));
    if (inserted) {
        person_names.push_back(person);
        person_faces.push_back(0);
    }
    return it->second;
}

// Runs FAISS's search; false (and a log line) if FAISS throws.
bool flat_index::impl::faiss_search(const float *queries, size_t nq, size_t kk,
                                    round_result &out) const {
    // omp_set_num_threads changes only the calling thread's setting.
    const int previous = omp_get_max_threads();
    omp_set_num_threads(search_threads());
    bool ok = true;
    try {
        flat.search(static_cast<faiss::Index::idx_t>(nq), queries,
                    static_cast<faiss::Index::idx_t>(kk), out.distances.data(),
                    out.labels.data());
    } catch (const std::exception &e) {
        logger()->error("flat_index: FAISS search of {} queries failed: {}", nq,
                        e.what());
        ok = false;
    }
    omp_set_num_threads(previous);
    return ok;
}

// The kk approximate nearest rows of each query: our scan for small
// batches and half-width storage, FAISS's BLAS path for large batches.
round_result flat_index::impl::candidates(const float *queries, size_t nq,
                                          size_t kk) const {
    round_result r;
    r.distances.resize(nq * kk);
    r.labels.resize(nq * kk);
    if (storage == storage_kind::f32 && nq >= faiss_min_batch) {
        r.from = source::faiss;
        if (faiss_search(queries, nq, kk, r)) {
            return r;
        }
    }

    scan_options options;
    options.isa = isa;
    options.threads = search_threads();
    const bool compact = storage != storage_kind::f32;
    r.from = compact ? source::scan_half : source::scan;
    const void *base = compact ? static_cast<const void *>(half.data())
                               : static_cast<const void *>(flat.get_xb());
    scan_knn(queries, nq, base, storage, ids.size(), dim, kk,
             r.distances.data(), r.labels.data(), options);
    return r;
}

// A distance every row left out of a round is at least: the round's last
// (largest) candidate distance minus the most its source can be off.
double flat_index::impl::unseen_lower_bound(source from, float last,
                                            const float *query) const {
    const double delta = kRoundoffMargin * (dim + kExtraTerms) * FLT_EPSILON;
    switch (from) {
        case source::scan:
            return last / (1 + delta);
        case source::faiss: {
            // ||x||^2 + ||y||^2 - 2<x,y>, each term rounded in float.
            const double query_norm = squared_norm(query, dim);
            return last - 2 * delta * (query_norm + max_sq_norm);
        }
        case source::scan_half: {
            // Triangle inequality: |x - y| >= |x - rounded y| - |error|.
            const double to_rounded = std::sqrt(last / (1 + delta));
            const double gap =
                std::max(0.0, to_rounded - max_half_error * (1 + delta));
            return gap * gap;
        }
    }
    return 0;
}

// Re-ranks one query's candidates by exact distance; true when the top-k
// they give is certainly the whole gallery's (or every row was a
// candidate), and then fills out.
bool flat_index::impl::finish(const float *query, const float *dist,
                              const int64_t *labels, size_t kk, source from,
                              size_t k, bool group, size_t need,
                              std::vector<hit> &out) const {
    struct ranked {
        double distance;
        uint64_t face;
        uint32_t person;
    };
    std::vector<ranked> all;
    all.reserve(kk);
    for (size_t i = 0; i < kk; ++i) {
        if (labels[i] >= 0) {
            const auto p = static_cast<size_t>(labels[i]);
            all.push_back({exact_l2(query, row(p), dim), ids[p], persons[p]});
        }
    }
    std::sort(all.begin(), all.end(), [](const ranked &a, const ranked &b) {
        return a.distance < b.distance ||
               (a.distance == b.distance && a.face < b.face);
    });

    out.clear();
    double last_kept = 0;  // exact distance of out.back()
    std::unordered_set<uint32_t> seen;
    for (const ranked &r : all) {
        if (out.size() == k) {
            break;
        }
        if (!group || seen.insert(r.person).second) {
            out.push_back({r.face, r.person, static_cast<float>(r.distance)});
            last_kept = r.distance;
        }
    }

    // Certified when every row left out is farther than the last hit.
    if (kk >= ids.size()) {
        return true;
    }
    if (out.size() < need || labels[kk - 1] < 0) {
        return false;
    }
    return last_kept < unseen_lower_bound(from, dist[kk - 1], query);
}

std::vector<std::vector<hit>> flat_index::impl::search(const float *queries,
                                                       size_t n, size_t k,
                                                       bool group) const {
    FACEVEC_ASSERT(k >= 1, "flat_index search: k must be >= 1");
    std::vector<std::vector<hit>> results(n);
    const size_t total = ids.size();
    if (total == 0 || n == 0) {
        return results;
    }
    const size_t need = std::min<uint64_t>(k, group ? live_persons : total);
    size_t kk = std::min(
        total, std::max(k * kCandidateFactor, k + kMinExtraCandidates));

    // Rounds: fetch kk candidates for the queries not yet certified, then
    // double kk for those left.
    std::vector<size_t> pending(n);
    for (size_t q = 0; q < n; ++q) {
        pending[q] = q;
    }
    std::vector<float> gathered;
    while (!pending.empty() && kk * kExhaustiveDivisor <= total) {
        gathered.resize(pending.size() * dim);
        for (size_t i = 0; i < pending.size(); ++i) {
            std::copy_n(queries + pending[i] * dim, dim,
                        gathered.data() + i * dim);
        }
        const round_result round =
            candidates(gathered.data(), pending.size(), kk);

        std::vector<size_t> left;
        for (size_t i = 0; i < pending.size(); ++i) {
            const size_t q = pending[i];
            if (!finish(queries + q * dim, round.distances.data() + i * kk,
                        round.labels.data() + i * kk, kk, round.from, k, group,
                        need, results[q])) {
                left.push_back(q);
            }
        }
        pending.swap(left);
        kk *= kGrowthFactor;
    }

    // Queries still uncertain rank every row exactly.
    if (!pending.empty()) {
        std::vector<int64_t> every_row(total);
        for (size_t p = 0; p < total; ++p) {
            every_row[p] = static_cast<int64_t>(p);
        }
        for (size_t q : pending) {
            finish(queries + q * dim, /*dist=*/nullptr, every_row.data(), total,
                   source::scan, k, group, need, results[q]);
        }
    }
    return results;
}

flat_index::flat_index(uint32_t dim, storage_kind storage)
    : impl_(std::make_unique<impl>(dim, storage)) {
    FACEVEC_ASSERT(dim >= 1, "flat_index: dim must be >= 1");
}

flat_index::~flat_index() = default;

uint32_t flat_index::dim() const {
    return impl_->dim;
}

uint64_t flat_index::size() const {
    return impl_->ids.size();
}

storage_kind flat_index::storage() const {
    return impl_->storage;
}

uint64_t flat_index::person_count() const {
    return impl_->live_persons;
}

void flat_index::set_threads(int threads) {
    impl_->threads = threads;
}

void flat_index::set_scan_isa(scan_isa isa) {
    impl_->isa = isa;
}

void flat_index::set_faiss_min_batch(size_t batch) {
    FACEVEC_ASSERT(batch >= 1,
                   "flat_index: FAISS batch threshold must be >= 1");
    impl_->faiss_min_batch = batch;
}

void flat_index::add(std::span<const uint64_t> ids,
                     std::span<const std::string> persons,
                     const float *vectors) {
    impl &m = *impl_;
    FACEVEC_ASSERT(ids.size() == persons.size(),
                   "flat_index::add: " + std::to_string(ids.size()) +
                       " ids but " + std::to_string(persons.size()) +
                       " persons");
    const size_t n = ids.size();
    const size_t first = m.ids.size();
    double max_sq_norm = m.max_sq_norm;
    for (size_t i = 0; i < n; ++i) {
        // The norm is finite exactly when every value is.
        const double sq_norm = squared_norm(vectors + i * m.dim, m.dim);
        FACEVEC_ASSERT(std::isfinite(sq_norm), "flat_index::add: face " +
                                                   std::to_string(ids[i]) +
                                                   " has a NaN or Inf");
        max_sq_norm = std::max(max_sq_norm, sq_norm);
        const bool fresh = m.position_of.emplace(ids[i], first + i).second;
        FACEVEC_ASSERT(fresh, "flat_index::add: face " +
                                  std::to_string(ids[i]) + " already held");
    }

    try {
        m.flat.add(static_cast<faiss::Index::idx_t>(n), vectors);
    } catch (const std::exception &e) {
        FACEVEC_ASSERT(
            false, std::string("flat_index::add: FAISS failed: ") + e.what());
    }

    for (size_t i = 0; i < n; ++i) {
        const uint32_t person = m.ordinal_for(persons[i]);
        m.live_persons += m.person_faces[person]++ == 0 ? 1 : 0;
        m.ids.push_back(ids[i]);
        m.persons.push_back(person);
    }
    m.max_sq_norm = max_sq_norm;
    if (m.storage != storage_kind::f32) {
        m.half.resize((first + n) * m.dim);
        uint16_t *dst = m.half.data() + first * m.dim;
        encode_half(vectors, n * m.dim, m.storage, dst);
        for (size_t i = 0; i < n; ++i) {
            double error = 0;
            for (size_t d = 0; d < m.dim; ++d) {
                const double diff =
                    static_cast<double>(vectors[i * m.dim + d]) -
                    decode_half(dst[i * m.dim + d], m.storage);
                error += diff * diff;
            }
            m.max_half_error = std::max(m.max_half_error, std::sqrt(error));
        }
    }
}

void flat_index::reserve(size_t faces) {
    impl &m = *impl_;
    const size_t total = m.ids.size() + faces;
    m.flat.codes.reserve(total * m.flat.code_size);
    m.ids.reserve(total);
    m.persons.reserve(total);
    m.position_of.reserve(total);
    if (m.storage != storage_kind::f32) {
        m.half.reserve(total * m.dim);
    }
}

size_t flat_index::remove(std::span<const uint64_t> ids) {
    impl &m = *impl_;
    std::vector<char> removed(m.ids.size(), 0);
    std::vector<faiss::Index::idx_t> positions;
    for (uint64_t id : ids) {
        auto it = m.position_of.find(id);
        if (it != m.position_of.end() && removed[it->second] == 0) {
            removed[it->second] = 1;
            positions.push_back(static_cast<faiss::Index::idx_t>(it->second));
        }
    }
    if (positions.empty()) {
        return 0;
    }

    // Limitation: O(size) per call; FAISS and our arrays are compacted.
    try {
        faiss::IDSelectorBatch selector(positions.size(), positions.data());
        m.flat.remove_ids(selector);
    } catch (const std::exception &e) {
        FACEVEC_ASSERT(
            false,
            std::string("flat_index::remove: FAISS failed: ") + e.what());
    }

    size_t kept = 0;
    for (size_t p = 0; p < m.ids.size(); ++p) {
        if (removed[p] != 0) {
            m.live_persons -= --m.person_faces[m.persons[p]] == 0 ? 1 : 0;
            continue;
        }
        m.ids[kept] = m.ids[p];
        m.persons[kept] = m.persons[p];
        if (m.storage != storage_kind::f32) {
            std::copy_n(m.half.begin() + p * m.dim, m.dim,
                        m.half.begin() + kept * m.dim);
        }
        ++kept;
    }
    m.ids.resize(kept);
    m.persons.resize(kept);
    m.half.resize(m.storage != storage_kind::f32 ? kept * m.dim : 0);
    m.position_of.clear();
    for (size_t p = 0; p < kept; ++p) {
        m.position_of.emplace(m.ids[p], p);
    }
    FACEVEC_ASSERT(static_cast<size_t>(m.flat.ntotal) == kept,
                   "flat_index::remove: FAISS holds " +
                       std::to_string(m.flat.ntotal) + " rows, expected " +
                       std::to_string(kept));
    return positions.size();
}

std::vector<std::vector<hit>> flat_index::search_persons(const float *queries,
                                                         size_t n,
                                                         size_t k) const {
    return impl_->search(queries, n, k, /*group=*/true);
}

std::vector<std::vector<hit>> flat_index::search_faces(const float *queries,
                                                       size_t n,
                                                       size_t k) const {
    return impl_->search(queries, n, k, /*group=*/false);
}

const std::string &flat_index::person_name(uint32_t person) const {
    FACEVEC_ASSERT(
        person < impl_->person_names.size(),
        "flat_index::person_name: unknown ordinal " + std::to_string(person));
    return impl_->person_names[person];
}

}  // namespace facevec::index
