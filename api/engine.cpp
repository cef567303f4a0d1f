#include "api/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <utility>

#include "common/log.h"
#include "index/flat_index.h"

namespace facevec {
namespace {

// Bytes of embeddings handed to the index at once while it is rebuilt.
constexpr size_t kLoadChunkBytes = 256 << 10;

// Runs `fn`, turning any exception thrown below (FAISS, RocksDB, the
// allocator) into an internal status naming `what`.
template <typename Fn>
status guarded(const std::string &what, Fn &&fn) {
    try {
        return fn();
    } catch (const std::bad_alloc &) {
        return {error_code::resource_exhausted, what + ": out of memory"};
    } catch (const std::exception &e) {
        return {error_code::internal, what + ": " + e.what()};
    } catch (...) {
        return {error_code::internal, what + ": unknown exception"};
    }
}

// A label or source as messages quote it: at most kQuotedBytes bytes
// (cut at a character boundary), so a huge bad value is not echoed whole.
std::string quoted(const std::string &text) {
    constexpr size_t kQuotedBytes = 64;
    constexpr uint8_t kContinuationMask = 0xc0;
    constexpr uint8_t kContinuationTag = 0x80;
    if (text.size() <= kQuotedBytes)
        return "\"" + text + "\"";
    size_t cut = kQuotedBytes;
    while (cut > 0 && (static_cast<uint8_t>(text[cut]) & kContinuationMask) ==
                          kContinuationTag)
        --cut;
    return "\"" + text.substr(0, cut) + "\"... (" +
           std::to_string(text.size()) + " bytes)";
}

// "item 3 (person "ann", source "a.npy#3")": how messages name an item.
std::string describe_item(const enroll_item &item, size_t position) {
    std::string s =
        "item " + std::to_string(position) + " (person " + quoted(item.person);
    if (!item.source.empty())
        s += ", source " + quoted(item.source);
    return s + ")";
}

// The L2 norm in double precision, so large finite values do not
// overflow to Inf.
double l2_norm(const float *v, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i)
        sum += double(v[i]) * double(v[i]);
    return std::sqrt(sum);
}

void normalize_in_place(float *v, size_t n) {
    double norm = l2_norm(v, n);
    FACEVEC_ASSERT(norm > 0, "normalising a zero vector");
    for (size_t i = 0; i < n; ++i)
        v[i] = float(v[i] / norm);
}

}  // namespace

status check_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (std::isnan(v[i])) {
            return invalid_argument("NaN at component " + std::to_string(i));
        }
        if (std::isinf(v[i])) {
            return invalid_argument("Inf at component " + std::to_string(i));
        }
        if (std::fabs(v[i]) > kMaxComponent) {
            std::ostringstream s;
            s << "component " << i << " is " << v[i] << ", beyond +-"
              << kMaxComponent << " (distances would overflow)";
            return invalid_argument(s.str());
        }
    }
    return status::ok();
}

struct engine::impl {
    std::string path;
    std::unique_ptr<storage::store> store;
    std::unique_ptr<index::flat_index> index;
    // Copies of the store's metadata that never change once open, read
    // without the lock (the store's meta() must not race set_threshold).
    uint32_t dim = 0;
    bool normalized = false;
    std::string fingerprint;
    // Writers (enroll, remove, threshold, purge) hold it exclusively;
    // queries and reads share it.
    mutable std::shared_mutex mutex;

    // Replaces the index with one built from the store in a single bulk
    // add. REQUIRES: the caller holds the mutex exclusively or is open().
    status rebuild_index();

    // Adds records (already in the store under `ids`) to the index; on a
    // failure rebuilds the index from the store. REQUIRES: exclusive lock.
    status add_to_index(const std::vector<storage::face_record> &records,
                        const std::vector<uint64_t> &ids);

    // Removes faces already removed from the store; on a failure rebuilds
    // the index from the store. REQUIRES: exclusive lock.
    status remove_from_index(const std::vector<uint64_t> &ids);

    // The answer for one query's per-person hits. REQUIRES: a lock.
    query_answer to_answer(const std::vector<index::hit> &hits,
                           float threshold) const;
};

status engine::impl::rebuild_index() {
    return guarded("database " + path + ": loading the index", [&] {
        auto fresh = std::make_unique<index::flat_index>(dim);
        fresh->reserve(store->face_count());

        // The store's records go to the index in chunks small enough to
        // stay in the CPU cache on their way to the index's own array.
        const size_t chunk_rows = std::max<size_t>(
            1, kLoadChunkBytes / (size_t{dim} * sizeof(float)));
        std::vector<uint64_t> ids;
        std::vector<std::string> persons;
        std::vector<float> vectors(chunk_rows * dim);
        auto flush = [&] {
            fresh->add(ids, persons, vectors.data());
            ids.clear();
            persons.clear();
        };
        FACEVEC_RETURN_IF_ERROR(
            store->load_faces([&](uint64_t id, std::string_view person,
                                  std::string_view embedding) {
                std::memcpy(vectors.data() + ids.size() * dim, embedding.data(),
                            embedding.size());
                ids.push_back(id);
                persons.emplace_back(person);
                if (ids.size() == chunk_rows)
                    flush();
            }));
        flush();
        index = std::move(fresh);
        return status::ok();
    });
}

engine::engine(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
engine::~engine() = default;

result<std::unique_ptr<engine>> engine::open(const std::string &path,
                                             const engine_options &o) {
    auto p = std::make_unique<impl>();
    p->path = path;

    storage::open_options so;
    so.create_if_missing = o.create_if_missing;
    so.meta = o.meta;
    so.sync = o.sync;
    status st = guarded("database " + path, [&] {
        auto s = storage::store::open(path, so);
        if (!s)
            return s.error();
        p->store = std::move(s).value();
        return status::ok();
    });
    if (!st) {
        if (st.message().find(path) != std::string::npos)
            return st;
        return st.with_context("database " + path);
    }
    p->dim = p->store->meta().dim;
    p->normalized = p->store->meta().normalized;
    p->fingerprint = p->store->meta().model_fingerprint;
    if (p->dim == 0) {
        return invalid_argument("database " + path +
                                ": dim is 0; give a dim of at least 1");
    }

    FACEVEC_RETURN_IF_ERROR(p->rebuild_index());
    logger()->info("opened {}: {} faces, dim {}", path, p->index->size(),
                   p->dim);
    return std::unique_ptr<engine>(new engine(std::move(p)));
}

status engine::validate(const enroll_item &item, size_t position) const {
    status st = [&] {
        if (item.embedding.size() != impl_->dim) {
            return invalid_argument(
                "embedding has " + std::to_string(item.embedding.size()) +
                " values, the database's dim is " + std::to_string(impl_->dim));
        }
        FACEVEC_RETURN_IF_ERROR(
            check_finite(item.embedding.data(), item.embedding.size()));
        FACEVEC_RETURN_IF_ERROR(storage::validate_label(item.person));
        if (impl_->normalized &&
            l2_norm(item.embedding.data(), item.embedding.size()) == 0) {
            return invalid_argument(
                "embedding is all zeros and cannot be L2-normalised");
        }
        return status::ok();
    }();
    return st.with_context(describe_item(item, position));
}

result<enroll_report> engine::enroll(std::span<const enroll_item> items,
                                     bool strict) {
    // Validation needs no lock: dim and normalisation never change.
    enroll_report report;
    std::vector<size_t> valid;
    for (size_t i = 0; i < items.size(); ++i) {
        status st = validate(items[i], i);
        if (st) {
            valid.push_back(i);
            continue;
        }
        if (strict) {
            return st.with_context("batch refused (strict)");
        }
        report.errors.push_back({i, std::move(st)});
    }

    std::unique_lock lock(impl_->mutex);
    status st = guarded("database " + impl_->path + ": enroll", [&] {
        // Skip what the person already has, in the store or in this batch.
        std::vector<std::pair<std::string, std::string>> keys;
        for (size_t i : valid) {
            if (!items[i].content_hash.empty())
                keys.emplace_back(items[i].person, items[i].content_hash);
        }
        auto looked_up = impl_->store->has_contents(keys);
        if (!looked_up)
            return looked_up.error();
        const std::vector<bool> &stored = looked_up.value();
        std::set<std::pair<std::string, std::string>> seen;
        std::vector<storage::face_record> records;
        records.reserve(valid.size());
        size_t hashed = 0;
        for (size_t i : valid) {
            const enroll_item &item = items[i];
            if (!item.content_hash.empty()) {
                auto key = std::make_pair(item.person, item.content_hash);
                if (stored[hashed++] || !seen.insert(std::move(key)).second) {
                    report.skipped.push_back(i);
                    continue;
                }
            }
            storage::face_record r;
            r.person = item.person;
            r.embedding = item.embedding;
            if (impl_->normalized) {
                normalize_in_place(r.embedding.data(), r.embedding.size());
            }
            r.source = item.source;
            r.content_hash = item.content_hash;
            r.model_fingerprint = impl_->fingerprint;
            records.push_back(std::move(r));
            report.enrolled.push_back(i);
        }
        if (records.empty())
            return status::ok();

        // The store first: once put_batch returns, the batch is durable.
        auto ids = impl_->store->put_batch(records);
        if (!ids)
            return ids.error();
        report.ids = std::move(ids).value();
        FACEVEC_ASSERT(report.ids.size() == records.size(),
                       "put_batch returned " +
                           std::to_string(report.ids.size()) + " ids for " +
                           std::to_string(records.size()) + " faces");
        return impl_->add_to_index(records, report.ids);
    });
    if (!st)
        return st;
    return report;
}

status engine::impl::add_to_index(
    const std::vector<storage::face_record> &records,
    const std::vector<uint64_t> &ids) {
    std::vector<float> vectors(records.size() * dim);
    std::vector<std::string> persons(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
        std::copy(records[i].embedding.begin(), records[i].embedding.end(),
                  vectors.begin() + i * dim);
        persons[i] = records[i].person;
    }
    status st = guarded("adding to the index", [&] {
        index->add(ids, persons, vectors.data());
        return status::ok();
    });
    if (st)
        return st;

    // The store holds the batch but the index failed: rebuild the index
    // from the store so the two agree again.
    logger()->error("{}; rebuilding the index from the store", st.message());
    FACEVEC_RETURN_IF_ERROR(rebuild_index());
    return status::ok();
}

result<std::vector<query_answer>> engine::query(
    const float *queries, size_t n, int k,
    std::optional<float> threshold) const {
    if (k <= 0 || k > kMaxTopK) {
        return invalid_argument("k = " + std::to_string(k) +
                                " is out of range 1.." +
                                std::to_string(kMaxTopK));
    }
    if (threshold && !(std::isfinite(*threshold) && *threshold > 0)) {
        return invalid_argument("threshold " + std::to_string(*threshold) +
                                " must be finite and > 0");
    }

    // Check every query; copy and normalise when the database is.
    const size_t dim = impl_->dim;
    std::vector<float> normalized;
    for (size_t q = 0; q < n; ++q) {
        const float *v = queries + q * dim;
        status st = check_finite(v, dim);
        if (st && impl_->normalized && l2_norm(v, dim) == 0) {
            st = invalid_argument("all zeros, cannot be L2-normalised");
        }
        if (!st)
            return st.with_context("query " + std::to_string(q));
    }
    if (impl_->normalized && n > 0) {
        normalized.assign(queries, queries + n * dim);
        for (size_t q = 0; q < n; ++q) {
            normalize_in_place(normalized.data() + q * dim, dim);
        }
        queries = normalized.data();
    }

    std::shared_lock lock(impl_->mutex);
    float limit = threshold.value_or(impl_->store->meta().threshold);
    std::vector<query_answer> answers(n);
    status st = guarded("database " + impl_->path + ": query", [&] {
        if (n == 0 || impl_->index->size() == 0)
            return status::ok();
        auto hits = impl_->index->search_persons(queries, n, size_t(k));
        for (size_t q = 0; q < n; ++q) {
            answers[q] = impl_->to_answer(hits[q], limit);
        }
        return status::ok();
    });
    if (!st)
        return st;
    return answers;
}

query_answer engine::impl::to_answer(const std::vector<index::hit> &hits,
                                     float threshold) const {
    query_answer a;
    for (const index::hit &h : hits) {
        a.top.push_back({index->person_name(h.person), h.face, h.distance});
    }
    if (a.top.empty())
        return a;

    // A threshold of 0 is unset: the nearest person is always the answer.
    a.distance = a.top.front().distance;
    if (threshold <= 0 || a.distance <= threshold) {
        a.person = a.top.front().person;
    }
    return a;
}

result<size_t> engine::remove_person(const std::string &person) {
    std::unique_lock lock(impl_->mutex);
    size_t removed = 0;
    status st = guarded("database " + impl_->path + ": remove person", [&] {
        auto ids = impl_->store->remove_person(person);
        if (!ids)
            return ids.error();
        removed = ids->size();
        return impl_->remove_from_index(*ids);
    });
    if (!st)
        return st;
    return removed;
}

status engine::remove_face(uint64_t id) {
    std::unique_lock lock(impl_->mutex);
    return guarded("database " + impl_->path + ": remove face", [&] {
        FACEVEC_RETURN_IF_ERROR(impl_->store->remove_face(id));
        std::vector<uint64_t> ids{id};
        return impl_->remove_from_index(ids);
    });
}

status engine::impl::remove_from_index(const std::vector<uint64_t> &ids) {
    status st = guarded("removing from the index", [&] {
        size_t n = index->remove(ids);
        if (n != ids.size()) {
            return status(error_code::internal,
                          "the index held " + std::to_string(n) + " of " +
                              std::to_string(ids.size()) + " removed faces");
        }
        return status::ok();
    });
    if (st)
        return st;

    logger()->error("{}; rebuilding the index from the store", st.message());
    return rebuild_index();
}

std::vector<std::pair<std::string, uint64_t>> engine::list_persons(
    const std::string &after, size_t limit) const {
    std::shared_lock lock(impl_->mutex);
    std::vector<std::pair<std::string, uint64_t>> out;
    status st = guarded("database " + impl_->path + ": list persons", [&] {
        out = impl_->store->list_persons(after, limit);
        return status::ok();
    });
    if (!st)
        logger()->error("{}", st.message());
    return out;
}

engine_stats engine::stats() const {
    std::shared_lock lock(impl_->mutex);
    engine_stats s;
    s.dim = impl_->dim;
    s.model_fingerprint = impl_->fingerprint;
    s.normalized = impl_->normalized;
    s.threshold = impl_->store->meta().threshold;
    s.indexed = impl_->index->size();
    status st = guarded("database " + impl_->path + ": stats", [&] {
        s.faces = impl_->store->face_count();
        s.persons = impl_->store->person_count();
        s.disk_bytes = impl_->store->disk_bytes();
        return status::ok();
    });
    if (!st)
        logger()->error("{}", st.message());
    return s;
}

const storage::db_meta &engine::meta() const {
    return impl_->store->meta();
}

status engine::set_threshold(float threshold) {
    if (!std::isfinite(threshold) || threshold < 0) {
        return invalid_argument("threshold " + std::to_string(threshold) +
                                " must be finite and >= 0 (0 unsets it)");
    }
    std::unique_lock lock(impl_->mutex);
    return guarded("database " + impl_->path + ": set threshold",
                   [&] { return impl_->store->set_threshold(threshold); });
}

status engine::purge() {
    std::unique_lock lock(impl_->mutex);
    return guarded("database " + impl_->path + ": purge",
                   [&] { return impl_->store->purge(); });
}

const storage::store &engine::store() const {
    return *impl_->store;
}

}  // namespace facevec
