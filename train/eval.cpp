#include "train/eval.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

namespace facevec::train {
namespace {

constexpr int kImageNumberDigits = 4;
constexpr size_t kSameFields = 3;
constexpr size_t kDifferentFields = 4;
constexpr size_t kHeaderViewTwoFields = 2;
constexpr double kFarOne = 1e-2;
constexpr double kFarTwo = 1e-3;
constexpr size_t kTopFive = 5;
// Slack for far * n computed in floating point (0.29 * 100 < 29).
constexpr double kCountSlack = 1e-9;

std::vector<std::string> split_fields(const std::string &line) {
    std::istringstream in(line);
    std::vector<std::string> fields;
    std::string f;
    while (in >> f)
        fields.push_back(f);
    return fields;
}

bool parse_int(const std::string &s, int *out) {
    const char *end = s.data() + s.size();
    auto [p, ec] = std::from_chars(s.data(), end, *out);
    return ec == std::errc() && p == end;
}

result<std::string> read_text(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return not_found(path + ": cannot open for reading");
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad())
        return io_error(path + ": read failed");
    return ss.str();
}

std::string where(const std::string &name, size_t line) {
    return name + " line " + std::to_string(line) + ": ";
}

// Reads image numbers; returns the error message or "".
std::string parse_ref(const std::string &person, const std::string &number,
                      image_ref *out) {
    out->person = person;
    if (!parse_int(number, &out->number)) {
        return "image number '" + number + "' is not an integer";
    }
    if (out->number < 1) {
        return "image number " + number + " is < 1";
    }
    return "";
}

bool is_finite_span(std::span<const float> v, size_t *bad) {
    for (size_t i = 0; i < v.size(); ++i) {
        if (!std::isfinite(v[i])) {
            *bad = i;
            return false;
        }
    }
    return true;
}

float just_below(float v) {
    return std::nextafter(v, -std::numeric_limits<float>::infinity());
}

// Indices of `distances` sorted by distance, ties by index.
std::vector<size_t> sorted_order(std::span<const float> distances) {
    std::vector<size_t> order(distances.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return distances[a] < distances[b];
    });
    return order;
}

size_t allowed_false_accepts(double far, size_t n) {
    return static_cast<size_t>(
        std::floor(far * static_cast<double>(n) + kCountSlack));
}

double sample_std(const std::vector<double> &v, double mean) {
    if (v.size() < 2)
        return 0;
    double s = 0;
    for (double x : v)
        s += (x - mean) * (x - mean);
    return std::sqrt(s / static_cast<double>(v.size() - 1));
}

// ROC points and AUC (trapezoids over tie groups: Mann-Whitney with half
// credit for ties).
void fill_roc(std::span<const float> distances, std::span<const uint8_t> same,
              verification_report *r) {
    size_t genuine = 0;
    for (uint8_t s : same)
        genuine += s != 0 ? 1 : 0;
    const size_t impostors = same.size() - genuine;
    std::vector<size_t> order = sorted_order(distances);

    r->roc.assign(1, roc_point{});
    r->auc = 0;
    size_t tp = 0;
    size_t fp = 0;
    for (size_t i = 0; i < order.size();) {
        const float v = distances[order[i]];
        for (; i < order.size() && distances[order[i]] == v; ++i) {
            (same[order[i]] != 0 ? tp : fp) += 1;
        }
        roc_point p{static_cast<double>(fp) / impostors,
                    static_cast<double>(tp) / genuine};
        r->auc += (p.far - r->roc.back().far) * (p.tar + r->roc.back().tar) / 2;
        r->roc.push_back(p);
    }
}

status check_pairs(std::span<const float> distances,
                   std::span<const uint8_t> same) {
    if (distances.size() != same.size()) {
        return invalid_argument(
            "verification: " + std::to_string(distances.size()) +
            " distances but " + std::to_string(same.size()) + " labels");
    }
    size_t bad = 0;
    if (!is_finite_span(distances, &bad)) {
        return invalid_argument("verification: pair " + std::to_string(bad) +
                                " has a non-finite distance");
    }
    size_t genuine = 0;
    for (uint8_t s : same)
        genuine += s != 0 ? 1 : 0;
    if (genuine == 0 || genuine == same.size()) {
        return invalid_argument(
            "verification: needs both genuine and impostor pairs, got " +
            std::to_string(genuine) + " genuine of " +
            std::to_string(same.size()));
    }
    return status::ok();
}

bool has_both_classes(const std::vector<uint8_t> &same) {
    bool g = false;
    bool i = false;
    for (uint8_t s : same)
        (s != 0 ? g : i) = true;
    return g && i;
}

// Fills the k-fold figures: threshold from the other folds, accuracy on
// the fold itself.
status fill_folds(std::span<const float> distances,
                  std::span<const uint8_t> same, std::span<const int> fold,
                  int folds, verification_report *r) {
    for (int f = 0; f < folds; ++f) {
        std::vector<float> in_d, out_d;
        std::vector<uint8_t> in_s, out_s;
        for (size_t i = 0; i < distances.size(); ++i) {
            bool inside = fold[i] == f;
            (inside ? in_d : out_d).push_back(distances[i]);
            (inside ? in_s : out_s).push_back(same[i]);
        }
        if (in_d.empty()) {
            return invalid_argument("verification: fold " + std::to_string(f) +
                                    " has no pairs");
        }
        if (!has_both_classes(out_s)) {
            return invalid_argument("verification: the folds other than " +
                                    std::to_string(f) +
                                    " lack genuine or impostor pairs");
        }
        float t = best_accuracy_threshold(out_d, out_s);
        r->fold_threshold.push_back(t);
        r->fold_accuracy.push_back(accuracy_at(in_d, in_s, t));
    }
    return status::ok();
}

}  // namespace

std::string lfw_image_path(const image_ref &ref) {
    char number[16];
    std::snprintf(number, sizeof(number), "%0*d", kImageNumberDigits,
                  ref.number);
    return "lfw/" + ref.person + "/" + ref.person + "_" + number + ".jpg";
}

result<lfw_pairs> parse_lfw_pairs(const std::string &text,
                                  const std::string &name) {
    std::istringstream in(text);
    std::string line;
    size_t line_no = 0;
    lfw_pairs out;

    // Header: "folds pairs" (View 2) or "pairs" (View 1).
    std::vector<std::string> header;
    while (header.empty() && std::getline(in, line)) {
        ++line_no;
        header = split_fields(line);
    }
    bool ok = !header.empty() && header.size() <= kHeaderViewTwoFields;
    if (ok && header.size() == kHeaderViewTwoFields) {
        ok = parse_int(header[0], &out.folds) &&
             parse_int(header[1], &out.pairs_per_class);
    } else if (ok) {
        out.folds = 1;
        ok = parse_int(header[0], &out.pairs_per_class);
    }
    if (!ok || out.folds < 1 || out.pairs_per_class < 1) {
        return invalid_argument(
            where(name, line_no) +
            "expected a header 'folds pairs_per_class' or 'pairs'");
    }

    const size_t per_fold = 2 * static_cast<size_t>(out.pairs_per_class);
    const size_t total = per_fold * static_cast<size_t>(out.folds);
    while (std::getline(in, line)) {
        ++line_no;
        std::vector<std::string> f = split_fields(line);
        if (f.empty())
            continue;
        const size_t k = out.pairs.size();
        if (k == total) {
            return invalid_argument(where(name, line_no) +
                                    "more pairs than the header's " +
                                    std::to_string(total));
        }
        lfw_pair p;
        p.fold = static_cast<int>(k / per_fold);
        p.same = (k % per_fold) < static_cast<size_t>(out.pairs_per_class);
        const size_t want = p.same ? kSameFields : kDifferentFields;
        if (f.size() != want) {
            return invalid_argument(
                where(name, line_no) + "expected a " +
                (p.same ? "same-person pair 'name n1 n2'"
                        : "different-person pair 'name1 n1 name2 n2'") +
                " (fold " + std::to_string(p.fold + 1) + "), got " +
                std::to_string(f.size()) + " fields");
        }
        std::string err = parse_ref(f[0], f[1], &p.a);
        if (err.empty()) {
            err = p.same ? parse_ref(f[0], f[2], &p.b)
                         : parse_ref(f[2], f[3], &p.b);
        }
        if (!err.empty()) {
            return invalid_argument(where(name, line_no) + err);
        }
        out.pairs.push_back(std::move(p));
    }
    if (out.pairs.size() != total) {
        return invalid_argument(name + ": ended at line " +
                                std::to_string(line_no) + " after " +
                                std::to_string(out.pairs.size()) + " of " +
                                std::to_string(total) + " pairs");
    }
    return out;
}

result<lfw_pairs> parse_lfw_pairs_file(const std::string &path) {
    result<std::string> text = read_text(path);
    if (!text)
        return text.error();
    return parse_lfw_pairs(text.value(), path);
}

result<std::vector<person_count>> parse_people(const std::string &text,
                                               const std::string &name) {
    std::istringstream in(text);
    std::string line;
    size_t line_no = 0;
    std::vector<person_count> out;
    while (std::getline(in, line)) {
        ++line_no;
        std::vector<std::string> f = split_fields(line);
        int n = 0;
        if (f.empty() || (f.size() == 1 && parse_int(f[0], &n)))
            continue;
        if (f.size() != 2 || !parse_int(f[1], &n) || n < 1) {
            return invalid_argument(where(name, line_no) +
                                    "expected 'name image_count' with "
                                    "count >= 1");
        }
        out.push_back({f[0], n});
    }
    if (out.empty()) {
        return invalid_argument(name + ": no people listed");
    }
    return out;
}

result<std::vector<person_count>> parse_people_file(const std::string &path) {
    result<std::string> text = read_text(path);
    if (!text)
        return text.error();
    return parse_people(text.value(), path);
}

double accuracy_at(std::span<const float> distances,
                   std::span<const uint8_t> same, float threshold) {
    FACEVEC_ASSERT(distances.size() == same.size() && !same.empty(),
                   "accuracy_at: sizes");
    size_t right = 0;
    for (size_t i = 0; i < distances.size(); ++i) {
        bool accept = distances[i] <= threshold;
        right += accept == (same[i] != 0) ? 1 : 0;
    }
    return static_cast<double>(right) / static_cast<double>(same.size());
}

float best_accuracy_threshold(std::span<const float> distances,
                              std::span<const uint8_t> same) {
    FACEVEC_ASSERT(distances.size() == same.size() && !same.empty(),
                   "best_accuracy_threshold: sizes");
    std::vector<size_t> order = sorted_order(distances);

    // Accept nothing: every impostor is right.
    size_t right = 0;
    for (uint8_t s : same)
        right += s != 0 ? 0 : 1;
    size_t best_right = right;
    float best = just_below(distances[order[0]]);

    // Raise the threshold one tie group at a time.
    for (size_t i = 0; i < order.size();) {
        const float v = distances[order[i]];
        for (; i < order.size() && distances[order[i]] == v; ++i) {
            if (same[order[i]] != 0) {
                ++right;
            } else {
                --right;
            }
        }
        if (right > best_right) {
            best_right = right;
            best = v;
        }
    }
    return best;
}

result<float> threshold_at_far(std::span<const float> impostors, double far) {
    if (impostors.empty()) {
        return invalid_argument("threshold_at_far: no impostor distances");
    }
    if (!(far > 0 && far <= 1)) {
        return invalid_argument("threshold_at_far: FAR " + std::to_string(far) +
                                " is not in (0, 1]");
    }
    size_t bad = 0;
    if (!is_finite_span(impostors, &bad)) {
        return invalid_argument("threshold_at_far: impostor " +
                                std::to_string(bad) +
                                " has a non-finite distance");
    }
    std::vector<float> sorted(impostors.begin(), impostors.end());
    std::sort(sorted.begin(), sorted.end());
    const size_t allowed = allowed_false_accepts(far, sorted.size());
    if (allowed >= sorted.size())
        return sorted.back();
    return just_below(sorted[allowed]);
}

result<operating_point> tar_at_far(std::span<const float> genuine,
                                   std::span<const float> impostors,
                                   double far) {
    if (genuine.empty()) {
        return invalid_argument("tar_at_far: no genuine distances");
    }
    result<float> t = threshold_at_far(impostors, far);
    if (!t)
        return t.error();

    operating_point p;
    p.threshold = t.value();
    size_t ta = 0;
    for (float d : genuine)
        ta += d <= p.threshold ? 1 : 0;
    size_t fa = 0;
    for (float d : impostors)
        fa += d <= p.threshold ? 1 : 0;
    p.tar = static_cast<double>(ta) / static_cast<double>(genuine.size());
    p.far = static_cast<double>(fa) / static_cast<double>(impostors.size());
    p.far_resolved = allowed_false_accepts(far, impostors.size()) >= 1;
    return p;
}

result<verification_report> evaluate_verification(
    std::span<const float> distances, std::span<const uint8_t> same,
    std::span<const int> fold) {
    FACEVEC_RETURN_IF_ERROR(check_pairs(distances, same));
    if (!fold.empty() && fold.size() != distances.size()) {
        return invalid_argument("verification: " + std::to_string(fold.size()) +
                                " fold ids for " +
                                std::to_string(distances.size()) + " pairs");
    }

    // Folds: ids 0..max.
    int folds = 1;
    for (size_t i = 0; i < fold.size(); ++i) {
        if (fold[i] < 0) {
            return invalid_argument("verification: pair " + std::to_string(i) +
                                    " has fold id " + std::to_string(fold[i]));
        }
        folds = std::max(folds, fold[i] + 1);
    }

    verification_report r;
    r.best_threshold = best_accuracy_threshold(distances, same);
    r.best_accuracy = accuracy_at(distances, same, r.best_threshold);
    if (folds == 1) {
        r.fold_threshold = {r.best_threshold};
        r.fold_accuracy = {r.best_accuracy};
    } else {
        FACEVEC_RETURN_IF_ERROR(fill_folds(distances, same, fold, folds, &r));
    }
    r.accuracy_mean =
        std::accumulate(r.fold_accuracy.begin(), r.fold_accuracy.end(), 0.0) /
        static_cast<double>(folds);
    r.accuracy_std = sample_std(r.fold_accuracy, r.accuracy_mean);
    r.accuracy_stderr = r.accuracy_std / std::sqrt(static_cast<double>(folds));

    std::vector<float> genuine, impostors;
    for (size_t i = 0; i < same.size(); ++i) {
        (same[i] != 0 ? genuine : impostors).push_back(distances[i]);
    }
    r.at_far_1e2 = tar_at_far(genuine, impostors, kFarOne).value();
    r.at_far_1e3 = tar_at_far(genuine, impostors, kFarTwo).value();
    fill_roc(distances, same, &r);
    return r;
}

open_set_split split_open_set(
    const std::map<std::string, std::vector<std::string>> &files_by_person) {
    open_set_split s;
    for (const auto &[person, files_in] : files_by_person) {
        std::vector<std::string> files = files_in;
        std::sort(files.begin(), files.end());
        if (files.size() == 1) {
            s.unknown.push_back({person, files[0]});
        } else if (files.size() >= 2) {
            s.gallery.push_back({person, files[0]});
            for (size_t i = 1; i < files.size(); ++i) {
                s.known.push_back({person, files[i]});
            }
        }
    }
    return s;
}

float squared_l2(const float *a, const float *b, size_t dim) {
    float s = 0;
    for (size_t i = 0; i < dim; ++i) {
        float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

std::vector<float> nearest_per_person(std::span<const float> gallery,
                                      std::span<const int> gallery_person,
                                      size_t persons,
                                      std::span<const float> probes,
                                      size_t dim) {
    FACEVEC_ASSERT(dim > 0 && gallery.size() == gallery_person.size() * dim &&
                       probes.size() % dim == 0,
                   "nearest_per_person: shapes");
    const size_t n = probes.size() / dim;
    std::vector<float> out(n * persons, std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < n; ++i) {
        float *row = out.data() + i * persons;
        for (size_t j = 0; j < gallery_person.size(); ++j) {
            const int p = gallery_person[j];
            FACEVEC_ASSERT(p >= 0 && static_cast<size_t>(p) < persons,
                           "nearest_per_person: person out of range");
            float d = squared_l2(probes.data() + i * dim,
                                 gallery.data() + j * dim, dim);
            row[p] = std::min(row[p], d);
        }
    }
    return out;
}

result<open_set_report> evaluate_open_set(std::span<const float> known,
                                          std::span<const int> truth,
                                          std::span<const float> unknown,
                                          size_t gallery_persons) {
    const size_t g = gallery_persons;
    if (g == 0 || truth.empty() || known.size() != truth.size() * g ||
        unknown.empty() || unknown.size() % g != 0) {
        return invalid_argument(
            "open-set: needs >= 1 gallery person, known probes (k x g) with "
            "one truth each and unknown probes (u x g); got g=" +
            std::to_string(g) + ", " + std::to_string(known.size()) +
            " known distances, " + std::to_string(truth.size()) + " truths, " +
            std::to_string(unknown.size()) + " unknown distances");
    }
    for (size_t i = 0; i < known.size(); ++i) {
        if (std::isnan(known[i])) {
            return invalid_argument("open-set: known probe " +
                                    std::to_string(i / g) +
                                    " has a NaN distance");
        }
    }

    // Ranks of the true person for known probes.
    open_set_report r;
    r.known = truth.size();
    r.gallery = g;
    r.unknown = unknown.size() / g;
    std::vector<size_t> rank(r.known);
    for (size_t i = 0; i < r.known; ++i) {
        if (truth[i] < 0 || static_cast<size_t>(truth[i]) >= g) {
            return invalid_argument("open-set: known probe " +
                                    std::to_string(i) + " has truth " +
                                    std::to_string(truth[i]) + " outside [0, " +
                                    std::to_string(g) + ")");
        }
        const float *row = known.data() + i * g;
        const float own = row[truth[i]];
        size_t closer = 0;
        for (size_t j = 0; j < g; ++j) {
            closer += (static_cast<int>(j) != truth[i] && row[j] <= own);
        }
        rank[i] = 1 + closer;
        r.rank1 += rank[i] == 1 ? 1 : 0;
        r.rank5 += rank[i] <= kTopFive ? 1 : 0;
    }
    r.rank1 /= static_cast<double>(r.known);
    r.rank5 /= static_cast<double>(r.known);

    // Unknown probes: their nearest distance to anyone sets the threshold.
    std::vector<float> unknown_best(r.unknown);
    for (size_t i = 0; i < r.unknown; ++i) {
        const float *row = unknown.data() + i * g;
        unknown_best[i] = *std::min_element(row, row + g);
    }
    for (auto [far, point] : {std::pair{kFarOne, &r.at_far_1e2},
                              std::pair{kFarTwo, &r.at_far_1e3}}) {
        result<float> t = threshold_at_far(unknown_best, far);
        if (!t)
            return t.error().with_context("open-set unknown probes");
        point->target_far = far;
        point->threshold.threshold = t.value();
        size_t fa = 0;
        for (float d : unknown_best)
            fa += d <= t.value() ? 1 : 0;
        point->threshold.far = static_cast<double>(fa) / r.unknown;
        point->threshold.far_resolved =
            allowed_false_accepts(far, r.unknown) >= 1;
        size_t hits = 0;
        for (size_t i = 0; i < r.known; ++i) {
            hits += rank[i] == 1 && known[i * g + truth[i]] <= t.value();
        }
        point->dir = static_cast<double>(hits) / r.known;
        point->threshold.tar = point->dir;
    }
    return r;
}

}  // namespace facevec::train
