// Exact L2 search over the faces of one database.
//
// FAISS IndexFlatL2 holds the vectors; facevec maps FAISS's positions to
// face ids and persons, and answers "top-k persons": each person's nearest
// face, so one person enrolled ten times does not fill the list. Distances
// are squared L2, as FAISS reports them.
//
// Not thread-safe by itself: the engine serialises writers and lets
// readers search concurrently (search is const and safe to call from many
// threads at once while nothing writes).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::index {

struct hit {
    uint64_t face = 0;
    uint32_t person = 0;  // the index's person ordinal, see person_name()
    float distance = 0;   // squared L2, >= 0
};

// How the vectors are kept for scanning. f32 is exact; bf16 and fp16 read
// half the bytes and re-rank candidates against the f32 values so that the
// returned top-k equals the f32 answer.
enum class storage_kind { f32, bf16, fp16 };

// The instruction set of the small-batch scan, see index/scan.h.
enum class scan_isa;

class flat_index {
  public:
    explicit flat_index(uint32_t dim, storage_kind storage = storage_kind::f32);
    ~flat_index();

    uint32_t dim() const;
    uint64_t size() const;  // faces held

    // Adds n faces: ids[n], persons[n] (labels), vectors n x dim floats
    // row-major. REQUIRES: ids unique and not present, vectors finite.
    void add(std::span<const uint64_t> ids,
             std::span<const std::string> persons, const float *vectors);

    // Makes room for `faces` more faces so that adding them in many small
    // calls (a bulk load) copies nothing twice.
    void reserve(size_t faces);

    // Removes the given faces; unknown ids are ignored. Returns the count
    // removed. Limitation: O(size) per call, FAISS compacts its array.
    size_t remove(std::span<const uint64_t> ids);

    // Top-k persons for each of n queries (n x dim floats). Result i holds
    // at most k hits, nearest first, one per person (its nearest face),
    // fewer when fewer persons are stored; none when the index is empty.
    // Exact: distances are recomputed in double and ties ordered by face
    // id, so a query gets the same answer alone or in any batch, on any
    // path. REQUIRES: k >= 1 (asserted).
    std::vector<std::vector<hit>> search_persons(const float *queries, size_t n,
                                                 size_t k) const;

    // Top-k faces for each query (no per-person grouping), with the same
    // guarantees as search_persons.
    std::vector<std::vector<hit>> search_faces(const float *queries, size_t n,
                                               size_t k) const;

    const std::string &person_name(uint32_t person) const;

    storage_kind storage() const;

    // Persons with at least one face held.
    uint64_t person_count() const;

    // OpenMP threads one search call may use; 0 (the default) means
    // omp_get_max_threads() at call time. Not to be called while another
    // thread searches.
    void set_threads(int threads);

    // The instruction set of the small-batch scan; scan_isa::automatic
    // (the default) honours FACEVEC_SCAN, then takes the best the CPU has.
    // Not to be called while another thread searches.
    void set_scan_isa(scan_isa isa);

    // Batches of at least this many queries are searched by FAISS (BLAS
    // matrix product), smaller ones by facevec's scan; the default is the
    // measured crossover (see flat_index.cpp). 1 sends every batch to
    // FAISS. Same answers either way. Not to be called while another
    // thread searches.
    void set_faiss_min_batch(size_t batch);

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::index
