// The database subcommands: create, import, query, remove, persons,
// stats, export and purge. Each opens the database with the engine, does
// one job and exits; errors are one "facevec: ..." line on stderr.
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/engine.h"
#include "api/json.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/csv.h"
#include "tools/vector_io.h"

namespace facevec::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr size_t kDefaultImportBatch = 10000;
constexpr size_t kDefaultQueryBatch = 1024;
constexpr int kDefaultTopK = 5;
constexpr size_t kPersonsPage = 1000;
// Exit status of an import that finished but rejected some items.
constexpr int kExitSomeRejected = 3;
// printf's %.9g keeps every float exactly and prints no more digits.
constexpr int kFloatDigits = 9;
// The sidecar labels file next to PREFIX.npy, written by export.
constexpr char kLabelsSuffix[] = ".labels.txt";

// A float for JSON with no more digits than the float holds.
double json_float(float f) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.*g", kFloatDigits, double(f));
    return std::strtod(buf, nullptr);
}

std::string dump(const json &j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

result<std::unique_ptr<engine>> open_existing(const std::string &db) {
    engine_options o;
    return engine::open(db, o);
}

// ---- create ----

struct create_options {
    std::string db;
    uint32_t dim = 0;
    bool normalized = false;
    float threshold = 0;
};

void run_create(const create_options &o) {
    if (fs::exists(o.db)) {
        fail("database " + o.db + " already exists");
        return;
    }
    engine_options eo;
    eo.create_if_missing = true;
    eo.meta.dim = o.dim;
    eo.meta.normalized = o.normalized;
    eo.meta.threshold = o.threshold;
    auto e = engine::open(o.db, eo);
    if (!e)
        return fail(e.error());
    std::printf(
        "created %s: dim %u, %s, threshold %s\n", o.db.c_str(), o.dim,
        o.normalized ? "normalized" : "not normalized",
        o.threshold > 0 ? std::to_string(o.threshold).c_str() : "unset");
}

void add_create(CLI::App &app) {
    auto o = std::make_shared<create_options>();
    CLI::App *c = app.add_subcommand("create", "Create an empty database");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--dim", o->dim, "Embedding dimension")
        ->required()
        ->check(CLI::Range(1u, kMaxVectorDim));
    c->add_flag("--normalized", o->normalized,
                "Embeddings are L2-normalised (enroll and query normalise)");
    c->add_option("--threshold", o->threshold,
                  "Squared-L2 distance above which a query is unknown; "
                  "0 = unset, never unknown")
        ->check(CLI::NonNegativeNumber);
    c->callback([o] { run([&] { run_create(*o); }); });
}

// ---- import ----

struct import_options {
    std::string db;
    std::string vectors;
    std::string manifest;
    std::string labels;
    std::string source;
    bool normalize = false;
    bool strict = false;
    bool report_commits = false;
    size_t batch = kDefaultImportBatch;
};

struct import_totals {
    uint64_t enrolled = 0;
    uint64_t skipped = 0;
    uint64_t rejected = 0;
};

std::string labels_path(const import_options &o) {
    if (!o.labels.empty())
        return o.labels;
    fs::path p(o.vectors);
    return (p.parent_path() / p.stem()).string() + kLabelsSuffix;
}

// Reads the next batch of rows and labels as enroll items.
result<std::vector<enroll_item>> read_batch(const import_options &o,
                                            vector_reader &vectors,
                                            labels_reader &labels) {
    uint64_t first = vectors.next_row();
    std::vector<float> rows;
    auto n = vectors.read(o.batch, rows);
    if (!n)
        return n.error();

    std::vector<enroll_item> items(*n);
    uint32_t d = vectors.dim();
    for (size_t i = 0; i < *n; ++i) {
        const float *row = rows.data() + i * d;
        items[i].person = labels.next().value_or("");
        items[i].embedding.assign(row, row + d);
        items[i].source = o.source.empty()
                              ? o.vectors + "#" + std::to_string(first + i)
                              : o.source;
        items[i].content_hash = content_hash(row, d);
    }
    return items;
}

// With --strict: every row is checked before anything is written.
status check_all(const import_options &o, const engine &e,
                 vector_reader &vectors, labels_reader &labels) {
    for (;;) {
        uint64_t first = vectors.next_row();
        auto items = read_batch(o, vectors, labels);
        if (!items)
            return items.error();
        if (items->empty())
            break;
        for (size_t i = 0; i < items->size(); ++i) {
            status st = e.validate((*items)[i], i);
            if (!st) {
                return st.with_context(o.vectors + " row " +
                                       std::to_string(first + i) +
                                       ": --strict, nothing imported");
            }
        }
    }
    FACEVEC_RETURN_IF_ERROR(vectors.rewind());
    return labels.rewind();
}

// Opens (or creates, with the file's dim) the database for an import.
result<std::unique_ptr<engine>> open_for_import(const import_options &o,
                                                uint32_t dim) {
    engine_options eo;
    eo.create_if_missing = true;
    eo.meta.dim = dim;
    eo.meta.normalized = o.normalize;
    auto e = engine::open(o.db, eo);
    if (!e)
        return e;
    if (o.normalize && !(*e)->meta().normalized) {
        return mismatch("database " + o.db +
                        " stores unnormalised embeddings; drop --normalize "
                        "or import into a new database");
    }
    return e;
}

// Prints an import's summary line; some rows rejected sets exit code 3.
void report_import(const std::string &input, const std::string &db,
                   bool created, const import_totals &totals, uint64_t rows,
                   std::chrono::steady_clock::time_point start) {
    double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    std::printf(
        "imported %s into %s%s: %llu enrolled, %llu skipped "
        "(already enrolled), %llu rejected; %.0f vectors/s\n",
        input.c_str(), db.c_str(), created ? " (created)" : "",
        static_cast<unsigned long long>(totals.enrolled),
        static_cast<unsigned long long>(totals.skipped),
        static_cast<unsigned long long>(totals.rejected),
        secs > 0 ? rows / secs : 0.0);
    if (totals.rejected > 0)
        set_exit_code(kExitSomeRejected);
}

// Enrolls one batch; prints each rejected item; adds to the totals.
status import_batch(const import_options &o, engine &e, uint64_t first,
                    uint64_t batch_no, std::span<const enroll_item> items,
                    import_totals &totals) {
    auto report = e.enroll(items, o.strict);
    if (!report) {
        return report.error().with_context(
            o.vectors + " rows " + std::to_string(first) + ".." +
            std::to_string(first + items.size() - 1));
    }
    for (const item_error &err : report->errors) {
        std::fprintf(stderr, "facevec: %s row %llu: %s\n", o.vectors.c_str(),
                     static_cast<unsigned long long>(first + err.item),
                     err.error.message().c_str());
    }
    totals.enrolled += report->enrolled.size();
    totals.skipped += report->skipped.size();
    totals.rejected += report->errors.size();
    if (o.report_commits) {
        std::printf("committed batch %llu rows %llu %zu enrolled %zu\n",
                    static_cast<unsigned long long>(batch_no),
                    static_cast<unsigned long long>(first), items.size(),
                    report->enrolled.size());
        std::fflush(stdout);
    }
    return status::ok();
}

void run_import(const import_options &o) {
    auto vectors = vector_reader::open(o.vectors);
    if (!vectors)
        return fail(vectors.error());
    vector_reader &vr = **vectors;

    // Labels: exactly one line per vector.
    std::string lpath = labels_path(o);
    auto lines = labels_reader::count_lines(lpath);
    if (!lines) {
        return fail(lines.error().with_context(
            o.labels.empty() ? "no --labels given and the default" : "labels"));
    }
    if (*lines != vr.rows()) {
        return fail("labels file " + lpath + " has " + std::to_string(*lines) +
                    " lines but " + o.vectors + " has " +
                    std::to_string(vr.rows()) + " vectors");
    }
    auto labels = labels_reader::open(lpath);
    if (!labels)
        return fail(labels.error());

    bool created = !fs::exists(o.db);
    auto e = open_for_import(o, vr.dim());
    if (!e)
        return fail(e.error());
    if (o.strict) {
        status st = check_all(o, **e, vr, **labels);
        if (!st) {
            e->reset();
            if (created)
                fs::remove_all(o.db);
            return fail(st);
        }
    }

    // Stream: one batch in memory at a time, each one atomic write.
    auto start = std::chrono::steady_clock::now();
    progress bar("import", vr.rows());
    import_totals totals;
    for (uint64_t batch_no = 0;; ++batch_no) {
        uint64_t first = vr.next_row();
        auto items = read_batch(o, vr, **labels);
        if (!items)
            return fail(items.error());
        if (items->empty())
            break;
        status st = import_batch(o, **e, first, batch_no, *items, totals);
        if (!st)
            return fail(st);
        bar.advance(items->size());
    }
    bar.finish();

    report_import(o.vectors, o.db, created, totals, vr.rows(), start);
}

// ---- import from a CSV manifest ----

// The manifest's columns (see add_import's help and the README).
enum manifest_column : size_t {
    path_column,
    person_column,
    row_column,
    source_column
};
const std::vector<std::string> kManifestColumns = {"path", "person", "row",
                                                   "source"};
// Vector files a manifest import keeps open at once.
constexpr size_t kMaxOpenVectorFiles = 16;

// The vector files a manifest names, opened on first use; the least
// recently used is closed when more than kMaxOpenVectorFiles are open.
class vector_files {
  public:
    result<vector_reader *> get(const std::string &path) {
        for (auto it = open_.begin(); it != open_.end(); ++it) {
            if (it->first == path) {
                open_.splice(open_.begin(), open_, it);
                return open_.front().second.get();
            }
        }
        auto reader = vector_reader::open(path);
        if (!reader)
            return reader.error();
        open_.emplace_front(path, std::move(reader).value());
        if (open_.size() > kMaxOpenVectorFiles)
            open_.pop_back();
        return open_.front().second.get();
    }

  private:
    std::list<std::pair<std::string, std::unique_ptr<vector_reader>>> open_;
};

// Streams a manifest's vectors as enroll items. A row that cannot be
// used (wrong number of fields, bad row number, unreadable vector file)
// is an error naming the manifest line; the stream goes on after it.
class manifest_source {
  public:
    static result<std::unique_ptr<manifest_source>> open(
        const std::string &path) {
        auto m = manifest_reader::open(path, kManifestColumns,
                                       {"path", "person"}, {"path", "person"});
        if (!m)
            return m.error();
        auto s = std::make_unique<manifest_source>();
        s->manifest_ = std::move(m).value();
        return s;
    }

    // Appends up to max items (and where each came from) and the errors
    // of the rows met on the way; 0 items and no error at the end.
    // Errors returned (not appended) end the import: a CSV syntax error
    // or a failed read.
    result<size_t> read(size_t max, std::vector<enroll_item> &items,
                        std::vector<std::string> &where,
                        std::vector<std::string> &errors) {
        size_t added = 0;
        while (added < max) {
            if (reader_ == nullptr) {
                auto more = next_row(errors);
                if (!more)
                    return more.error();
                if (!*more)
                    break;
                continue;
            }
            if (next_ == end_) {
                reader_ = nullptr;
                continue;
            }
            FACEVEC_RETURN_IF_ERROR(read_vector(items, where));
            ++added;
        }
        return added;
    }

  private:
    // Reads manifest records until one gives vectors (sets reader_ and
    // the rows to read); false at the end of the manifest.
    result<bool> next_row(std::vector<std::string> &errors) {
        for (;;) {
            auto got = manifest_->next(values_);
            if (!got) {
                if (got.error().code() != error_code::invalid_argument)
                    return got.error();
                errors.push_back(got.error().message());
                continue;
            }
            if (!*got)
                return false;
            status st = start_row();
            if (st)
                return true;
            errors.push_back(manifest_->where() + ": " + st.message());
        }
    }

    status start_row() {
        const std::string &file = values_[path_column];
        if (file.empty())
            return invalid_argument("empty path");
        auto reader = files_.get(manifest_->resolve(file));
        if (!reader)
            return reader.error();
        vector_reader &r = **reader;
        next_ = 0;
        end_ = r.rows();
        const std::string &row = values_[row_column];
        if (!row.empty()) {
            uint64_t n = 0;
            auto [end, ec] =
                std::from_chars(row.data(), row.data() + row.size(), n);
            if (ec != std::errc() || end != row.data() + row.size()) {
                return invalid_argument("row '" + row +
                                        "' is not a row number (0, 1, ...)");
            }
            if (n >= r.rows()) {
                return invalid_argument("row " + row +
                                        " is out of range: " + file + " has " +
                                        std::to_string(r.rows()) + " rows");
            }
            next_ = n;
            end_ = n + 1;
        }
        FACEVEC_RETURN_IF_ERROR(r.seek(next_));
        reader_ = &r;
        return status::ok();
    }

    status read_vector(std::vector<enroll_item> &items,
                       std::vector<std::string> &where) {
        // Another row may have moved the shared reader since.
        if (reader_->next_row() != next_)
            FACEVEC_RETURN_IF_ERROR(reader_->seek(next_));
        auto n = reader_->read(1, row_);
        if (!n)
            return n.error().with_context(manifest_->where());
        enroll_item item;
        item.person = values_[person_column];
        item.embedding = row_;
        item.source = values_[source_column].empty()
                          ? values_[path_column] + "#" + std::to_string(next_)
                          : values_[source_column];
        item.content_hash = content_hash(row_.data(), row_.size());
        items.push_back(std::move(item));
        where.push_back(manifest_->where() +
                        (values_[row_column].empty()
                             ? " (row " + std::to_string(next_) + ")"
                             : ""));
        ++next_;
        return status::ok();
    }

    std::unique_ptr<manifest_reader> manifest_;
    vector_files files_;
    std::vector<std::string> values_;
    vector_reader *reader_ = nullptr;  // the current row's file
    uint64_t next_ = 0;
    uint64_t end_ = 0;
    std::vector<float> row_;
};

// Prints the per-row errors of a manifest read; counts them as rejected.
void report_row_errors(const std::vector<std::string> &errors,
                       import_totals &totals) {
    for (const std::string &e : errors)
        std::fprintf(stderr, "facevec: %s\n", e.c_str());
    totals.rejected += errors.size();
}

// With --strict: every row of the manifest is read and checked before
// anything is written; the first bad one fails the import.
status check_manifest(const import_options &o, const engine &e) {
    auto source = manifest_source::open(o.manifest);
    if (!source)
        return source.error();
    std::vector<enroll_item> items;
    std::vector<std::string> where;
    std::vector<std::string> errors;
    for (;;) {
        items.clear();
        where.clear();
        auto n = (*source)->read(o.batch, items, where, errors);
        if (!n)
            return n.error();
        if (!errors.empty()) {
            return invalid_argument(errors.front() +
                                    ": --strict, nothing imported");
        }
        if (*n == 0)
            return status::ok();
        for (size_t i = 0; i < items.size(); ++i) {
            status st = e.validate(items[i], i);
            if (!st) {
                return st.with_context(where[i] +
                                       ": --strict, nothing imported");
            }
        }
    }
}

void run_import_manifest(const import_options &o) {
    auto source = manifest_source::open(o.manifest);
    if (!source)
        return fail(source.error());

    // The first batch is read before the database is opened: a new
    // database takes its dim from the first vector.
    std::vector<enroll_item> items;
    std::vector<std::string> where;
    std::vector<std::string> errors;
    auto n = (*source)->read(o.batch, items, where, errors);
    if (!n)
        return fail(n.error());
    bool created = !fs::exists(o.db);
    import_totals totals;
    if (items.empty() && created) {
        report_row_errors(errors, totals);
        return fail("no vector could be read from " + o.manifest +
                    ", so database " + o.db + " was not created");
    }
    auto e = open_for_import(
        o, items.empty() ? 0 : uint32_t(items.front().embedding.size()));
    if (!e)
        return fail(e.error());
    if (o.strict) {
        status st = check_manifest(o, **e);
        if (!st) {
            e->reset();
            if (created)
                fs::remove_all(o.db);
            return fail(st);
        }
    }

    // Stream: one batch in memory at a time, each one atomic write.
    auto start = std::chrono::steady_clock::now();
    progress bar("import", 0);
    uint64_t read_rows = 0;
    for (uint64_t batch_no = 0; !items.empty() || !errors.empty(); ++batch_no) {
        report_row_errors(errors, totals);
        if (!items.empty()) {
            auto report = (*e)->enroll(items, o.strict);
            if (!report) {
                return fail(report.error().with_context(where.front() + " .. " +
                                                        where.back()));
            }
            for (const item_error &err : report->errors) {
                std::fprintf(stderr, "facevec: %s: %s\n",
                             where[err.item].c_str(),
                             err.error.message().c_str());
            }
            totals.enrolled += report->enrolled.size();
            totals.skipped += report->skipped.size();
            totals.rejected += report->errors.size();
            if (o.report_commits) {
                std::printf("committed batch %llu rows %llu %zu enrolled %zu\n",
                            static_cast<unsigned long long>(batch_no),
                            static_cast<unsigned long long>(read_rows),
                            items.size(), report->enrolled.size());
                std::fflush(stdout);
            }
            read_rows += items.size();
            bar.advance(items.size());
        }
        items.clear();
        where.clear();
        errors.clear();
        n = (*source)->read(o.batch, items, where, errors);
        if (!n)
            return fail(n.error());
    }
    bar.finish();

    report_import(o.manifest, o.db, created, totals, read_rows, start);
}

void add_import(CLI::App &app) {
    auto o = std::make_shared<import_options>();
    CLI::App *c = app.add_subcommand(
        "import",
        "Enroll vectors from a .npy (float32, n x d) or .fvecs file and a "
        "labels file, or from a CSV manifest, batch by batch; creates the "
        "database when missing");
    c->add_option("--db", o->db, "Database directory")->required();
    auto *vectors =
        c->add_option("--vectors", o->vectors, ".npy or .fvecs file");
    auto *manifest = c->add_option(
        "--manifest", o->manifest,
        "CSV manifest instead of --vectors (RFC 4180 quoting, UTF-8). Its "
        "header names the columns, in any order: path (a .npy or .fvecs "
        "file, relative to the manifest's folder), person, and optionally "
        "row (0-based; empty or absent: every row of the file) and source "
        "(default PATH#row). Without a header the columns are path,person. "
        "A row that cannot be used is reported with its line and skipped");
    vectors->excludes(manifest);
    c->add_option("--labels", o->labels,
                  "One person per line, as many lines as vectors "
                  "(default: VECTORS without extension + .labels.txt)")
        ->excludes(manifest);
    c->add_option("--source", o->source,
                  "Source recorded for every face (default FILE#row)")
        ->excludes(manifest);
    c->add_flag("--normalize", o->normalize,
                "Create the database as L2-normalised (vectors are "
                "normalised on enroll and query)");
    c->add_option("--batch", o->batch, "Vectors per atomic write")
        ->check(CLI::PositiveNumber);
    c->add_flag("--strict", o->strict,
                "Check every vector and label first; import nothing if any "
                "is invalid");
    c->add_flag("--report-commits", o->report_commits,
                "Print a line per committed batch")
        ->group("");
    c->callback([o] {
        run([&] {
            if (o->vectors.empty() == o->manifest.empty()) {
                return fail(
                    "import: give either --vectors FILE or "
                    "--manifest CSV");
            }
            if (!o->manifest.empty())
                return run_import_manifest(*o);
            run_import(*o);
        });
    });
}

// ---- query ----

struct query_options {
    std::string db;
    std::string vectors;
    int k = kDefaultTopK;
    float threshold_value = 0;
    std::optional<float> threshold;  // set when --threshold was given
    size_t batch = kDefaultQueryBatch;
    std::vector<std::string> images;  // photos or folders instead
    bool largest = false;
    std::string model;  // photos: a weights file; default the database's
};

// Every query of the batch starting at `first` is finite.
status check_queries(const query_options &o, uint64_t first,
                     const std::vector<float> &rows, uint32_t dim) {
    for (size_t i = 0; i * dim < rows.size(); ++i) {
        status st = check_finite(rows.data() + i * dim, dim);
        if (!st) {
            return st.with_context(o.vectors + " row " +
                                   std::to_string(first + i));
        }
    }
    return status::ok();
}

void run_query(const query_options &o) {
    if (o.vectors.empty() == o.images.empty()) {
        return fail("query: give either --vectors FILE or images");
    }
    if (!o.images.empty()) {
        return run_image_query(o.db, o.images, o.model, o.k, o.threshold,
                               o.largest);
    }
    auto e = open_existing(o.db);
    if (!e)
        return fail(e.error());
    auto probe = (*e)->query(nullptr, 0, o.k, o.threshold);
    if (!probe)
        return fail(probe.error());

    auto vectors = vector_reader::open(o.vectors);
    if (!vectors)
        return fail(vectors.error());
    vector_reader &vr = **vectors;
    if (vr.dim() != (*e)->meta().dim) {
        return fail(status(error_code::mismatch,
                           o.vectors + " has dim " + std::to_string(vr.dim()) +
                               ", database " + o.db + " has dim " +
                               std::to_string((*e)->meta().dim)));
    }

    // Stream: answers are printed batch by batch, one line per query.
    std::vector<float> rows;
    for (;;) {
        uint64_t first = vr.next_row();
        auto n = vr.read(o.batch, rows);
        if (!n)
            return fail(n.error());
        if (*n == 0)
            break;
        status st = check_queries(o, first, rows, vr.dim());
        if (!st)
            return fail(st);
        auto answers = (*e)->query(rows.data(), *n, o.k, o.threshold);
        if (!answers)
            return fail(answers.error());
        for (size_t i = 0; i < *n; ++i) {
            std::printf("%s\n",
                        api::to_json((*answers)[i], first + i).dump().c_str());
        }
    }
    std::fflush(stdout);
}

void add_query(CLI::App &app) {
    auto o = std::make_shared<query_options>();
    CLI::App *c = app.add_subcommand(
        "query",
        "Search the database; prints one JSON object per query (JSON "
        "Lines): {query, person (null: unknown), distance, top}");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--vectors", o->vectors,
                  "Query vectors: .npy (float32, n x d) or .fvecs");
    c->add_option("images", o->images,
                  "Photos, or folders of photos, instead of --vectors: one "
                  "JSON object per face found, with its input and box");
    c->add_flag("--largest", o->largest,
                "Photos: only the largest face of each");
    c->add_option("--model", o->model,
                  "Photos: the weights file the database was enrolled with "
                  "(default: the built-in model its fingerprint names)");
    c->add_option("-k,--top", o->k, "Persons per answer")
        ->capture_default_str();
    auto *threshold =
        c->add_option("--threshold", o->threshold_value,
                      "Squared-L2 distance above which a query is unknown, > 0 "
                      "(default: the database's)");
    c->add_option("--batch", o->batch, "Queries searched together")
        ->check(CLI::PositiveNumber);
    c->callback([o, threshold] {
        if (threshold->count() > 0)
            o->threshold = o->threshold_value;
        run([&] { run_query(*o); });
    });
}

// ---- remove ----

struct remove_options {
    std::string db;
    std::string person;
    uint64_t face = 0;
    bool by_person = false;
};

void run_remove(const remove_options &o) {
    auto e = open_existing(o.db);
    if (!e)
        return fail(e.error());
    if (o.by_person) {
        auto n = (*e)->remove_person(o.person);
        if (!n)
            return fail(n.error());
        std::printf("removed person \"%s\" (%zu faces)\n", o.person.c_str(),
                    *n);
        return;
    }
    status st = (*e)->remove_face(o.face);
    if (!st)
        return fail(st);
    std::printf("removed face %llu\n", static_cast<unsigned long long>(o.face));
}

void add_remove(CLI::App &app) {
    auto o = std::make_shared<remove_options>();
    CLI::App *c = app.add_subcommand(
        "remove",
        "Remove a person (all faces) or one face; run purge to "
        "erase them from the files at once");
    c->add_option("--db", o->db, "Database directory")->required();
    CLI::Option_group *which =
        c->add_option_group("which", "What to remove: exactly one of");
    auto *person = which->add_option("--person", o->person, "Person label");
    which->add_option("--face", o->face, "Face id");
    which->require_option(1);
    c->callback([o, person] {
        o->by_person = person->count() > 0;
        run([&] { run_remove(*o); });
    });
}

// ---- persons ----

struct persons_options {
    std::string db;
    std::string after;
    size_t limit = 0;
    bool json = false;
};

void run_persons(const persons_options &o) {
    auto e = open_existing(o.db);
    if (!e)
        return fail(e.error());

    // Page through the persons so memory stays bounded.
    std::string after = o.after;
    size_t printed = 0;
    while (o.limit == 0 || printed < o.limit) {
        size_t want = kPersonsPage;
        if (o.limit != 0)
            want = std::min(want, o.limit - printed);
        auto page = (*e)->list_persons(after, want);
        for (const auto &[name, faces] : page) {
            if (o.json) {
                std::printf("%s\n",
                            dump({{"person", name}, {"faces", faces}}).c_str());
            } else {
                std::printf("%s\t%llu\n", name.c_str(),
                            static_cast<unsigned long long>(faces));
            }
        }
        printed += page.size();
        if (page.size() < want)
            break;
        after = page.back().first;
    }
}

void add_persons(CLI::App &app) {
    auto o = std::make_shared<persons_options>();
    CLI::App *c = app.add_subcommand(
        "persons",
        "List persons in label order with their face counts (NAME<TAB>N, "
        "or JSON Lines {person, faces})");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--after", o->after, "Start after this label");
    c->add_option("--limit", o->limit, "At most this many (0 = all)");
    c->add_flag("--json", o->json, "JSON Lines output");
    c->callback([o] { run([&] { run_persons(*o); }); });
}

// ---- stats ----

struct stats_options {
    std::string db;
    bool json = false;
};

void run_stats(const stats_options &o) {
    auto e = open_existing(o.db);
    if (!e)
        return fail(e.error());
    engine_stats s = (*e)->stats();
    if (o.json) {
        json j = {{"faces", s.faces},
                  {"persons", s.persons},
                  {"dim", s.dim},
                  {"model_fingerprint", s.model_fingerprint},
                  {"normalized", s.normalized},
                  {"threshold", json_float(s.threshold)},
                  {"disk_bytes", s.disk_bytes}};
        std::printf("%s\n", dump(j).c_str());
        return;
    }
    std::printf(
        "faces: %llu\npersons: %llu\ndim: %u\nnormalized: %s\n"
        "threshold: %g%s\nmodel: %s\ndisk bytes: %llu\n",
        static_cast<unsigned long long>(s.faces),
        static_cast<unsigned long long>(s.persons), s.dim,
        s.normalized ? "yes" : "no", double(s.threshold),
        s.threshold > 0 ? "" : " (unset)",
        s.model_fingerprint.empty() ? "-" : s.model_fingerprint.c_str(),
        static_cast<unsigned long long>(s.disk_bytes));
}

void add_stats(CLI::App &app) {
    auto o = std::make_shared<stats_options>();
    CLI::App *c = app.add_subcommand("stats", "Show the database's figures");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_flag("--json", o->json, "One JSON object");
    c->callback([o] { run([&] { run_stats(*o); }); });
}

// ---- export ----

struct export_options {
    std::string db;
    std::string out;
    bool ids = false;
};

// Opens PATH for writing, or fails naming it.
result<std::unique_ptr<std::FILE, int (*)(std::FILE *)>> open_text(
    const std::string &path) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
        return io_error(path + ": " + std::strerror(errno));
    }
    return std::unique_ptr<std::FILE, int (*)(std::FILE *)>(f, &std::fclose);
}

// Removes the files an export has created unless it finished: a failed
// export leaves no partial copy of the embeddings behind.
class export_files {
  public:
    export_files() = default;
    export_files(const export_files &) = delete;
    export_files &operator=(const export_files &) = delete;
    ~export_files() {
        if (done_)
            return;
        for (const std::string &path : paths_) {
            std::error_code ec;
            std::filesystem::remove(path, ec);
        }
    }
    // Call once `path` has been created.
    void add(std::string path) { paths_.push_back(std::move(path)); }
    void keep() { done_ = true; }

  private:
    std::vector<std::string> paths_;
    bool done_ = false;
};

void run_export(const export_options &o) {
    auto e = open_existing(o.db);
    if (!e)
        return fail(e.error());
    export_files files;
    auto npy = npy_writer::create(o.out + ".npy", (*e)->meta().dim);
    if (!npy)
        return fail(npy.error());
    files.add(o.out + ".npy");
    auto labels = open_text(o.out + kLabelsSuffix);
    if (!labels)
        return fail(labels.error());
    files.add(o.out + kLabelsSuffix);
    std::optional<std::unique_ptr<std::FILE, int (*)(std::FILE *)>> ids;
    if (o.ids) {
        auto f = open_text(o.out + ".ids.txt");
        if (!f)
            return fail(f.error());
        files.add(o.out + ".ids.txt");
        ids = std::move(f).value();
    }

    // One row, one label line (and one id line) per face, in id order.
    uint64_t n = 0;
    status st = (*e)->store().scan([&](const storage::face_record &r) {
        if (r.person.find_first_of("\r\n") != std::string::npos) {
            // Limitation: the labels file cannot hold line breaks.
            return invalid_argument("face " + std::to_string(r.id) +
                                    ": label contains a line break");
        }
        FACEVEC_RETURN_IF_ERROR((*npy)->write_row(r.embedding.data()));
        std::fprintf(labels->get(), "%s\n", r.person.c_str());
        if (ids) {
            std::fprintf(ids->get(), "%llu\n",
                         static_cast<unsigned long long>(r.id));
        }
        ++n;
        return status::ok();
    });
    if (!st)
        return fail(st);
    st = (*npy)->finish();
    if (!st)
        return fail(st);
    if (std::fflush(labels->get()) != 0) {
        return fail(io_error(o.out + kLabelsSuffix + ": write failed"));
    }
    if (ids && std::fflush(ids->get()) != 0) {
        return fail(io_error(o.out + ".ids.txt: write failed"));
    }
    files.keep();
    std::printf("exported %llu faces to %s.npy and %s%s\n",
                static_cast<unsigned long long>(n), o.out.c_str(),
                o.out.c_str(), kLabelsSuffix);
}

void add_export(CLI::App &app) {
    auto o = std::make_shared<export_options>();
    CLI::App *c = app.add_subcommand(
        "export",
        "Write every face to PREFIX.npy (float32, n x d) and "
        "PREFIX.labels.txt (one person per line), in id order");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--out", o->out, "Output prefix")->required();
    c->add_flag("--ids", o->ids, "Also write PREFIX.ids.txt (face ids)");
    c->callback([o] { run([&] { run_export(*o); }); });
}

// ---- purge ----

void add_purge(CLI::App &app) {
    auto db = std::make_shared<std::string>();
    CLI::App *c = app.add_subcommand(
        "purge", "Compact the database so removed faces leave the files now");
    c->add_option("--db", *db, "Database directory")->required();
    c->callback([db] {
        run([&] {
            auto e = open_existing(*db);
            if (!e)
                return fail(e.error());
            uint64_t before = (*e)->stats().disk_bytes;
            status st = (*e)->purge();
            if (!st)
                return fail(st);
            std::printf(
                "purged %s: %llu -> %llu bytes\n", db->c_str(),
                static_cast<unsigned long long>(before),
                static_cast<unsigned long long>((*e)->stats().disk_bytes));
        });
    });
}

}  // namespace

void register_db_commands(CLI::App &app) {
    add_create(app);
    add_import(app);
    add_query(app);
    add_remove(app);
    add_persons(app);
    add_stats(app);
    add_export(app);
    add_purge(app);
}

}  // namespace facevec::cli
