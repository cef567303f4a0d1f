#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "common/log.h"
#include "train/rng.h"

namespace facevec::train {
namespace {

constexpr int kValidationFolds = 10;
// Salts that keep the generators of one seed independent.
constexpr uint64_t kInitSalt = 0x1d8e4e27c47d124fULL;
constexpr uint64_t kSamplerSalt = 0x7a3b9f11c2d4e5f6ULL;

// Rows of every person, in row order.
std::vector<std::vector<size_t>> rows_by_person(const feature_set &s) {
    std::vector<std::vector<size_t>> rows(s.persons.size());
    for (size_t i = 0; i < s.label.size(); ++i) {
        rows[s.label[i]].push_back(i);
    }
    return rows;
}

// Draws batches of P x K (+ S single-image negatives).
class batch_sampler {
  public:
    batch_sampler(const feature_set &s, const train_config &c)
        : config_(c), rng_(c.seed ^ kSamplerSalt) {
        for (auto &rows : rows_by_person(s)) {
            if (rows.size() >= 2) {
                multi_.push_back(std::move(rows));
            } else if (rows.size() == 1) {
                singles_.push_back(rows[0]);
            }
        }
    }

    size_t multi_people() const { return multi_.size(); }
    size_t single_people() const { return singles_.size(); }

    void start_epoch() {
        order_.resize(multi_.size());
        std::iota(order_.begin(), order_.end(), size_t{0});
        shuffle(order_, rng_);
        shuffle(singles_, rng_);
    }

    // Rows of batch b of the epoch.
    std::vector<size_t> batch(size_t b) {
        std::vector<size_t> rows;
        const size_t p = std::min(config_.persons_per_batch, multi_.size());
        for (size_t j = 0; j < p; ++j) {
            std::vector<size_t> pool =
                multi_[order_[(b * p + j) % order_.size()]];
            const size_t k = std::min(config_.images_per_person, pool.size());
            for (size_t i = 0; i < k; ++i) {
                std::swap(pool[i], pool[i + rng_.below(pool.size() - i)]);
                rows.push_back(pool[i]);
            }
        }
        const size_t s =
            std::min(config_.singletons_per_batch, singles_.size());
        for (size_t i = 0; i < s; ++i) {
            rows.push_back(singles_[(b * s + i) % singles_.size()]);
        }
        return rows;
    }

  private:
    train_config config_;
    rng rng_;
    std::vector<std::vector<size_t>> multi_;
    std::vector<size_t> singles_;
    std::vector<size_t> order_;
};

status check_config(const feature_set &train, const validation_set &val,
                    const train_config &c) {
    if (c.persons_per_batch < 2 || c.images_per_person < 2) {
        return invalid_argument(
            "training: a batch needs >= 2 people (P) and >= 2 images per "
            "person (K); got P=" +
            std::to_string(c.persons_per_batch) +
            " K=" + std::to_string(c.images_per_person));
    }
    if (c.epochs < 1 || !(c.margin > 0) || c.patience < 0) {
        return invalid_argument(
            "training: epochs must be >= 1, margin > 0 "
            "and patience >= 0");
    }
    if (train.features.rows == 0 ||
        val.set.features.cols != train.features.cols) {
        return invalid_argument(
            "training: training features are empty or their dim " +
            std::to_string(train.features.cols) +
            " differs from the validation dim " +
            std::to_string(val.set.features.cols));
    }
    for (const auto *set : {&train, &val.set}) {
        const feature_matrix &m = set->features;
        if (m.data.size() != m.rows * m.cols || set->label.size() != m.rows) {
            return invalid_argument(
                "training: a feature set holds " +
                std::to_string(m.data.size()) + " floats and " +
                std::to_string(set->label.size()) + " labels for " +
                std::to_string(m.rows) + " x " + std::to_string(m.cols));
        }
        for (size_t i = 0; i < m.data.size(); ++i) {
            if (!std::isfinite(m.data[i])) {
                return invalid_argument(
                    std::string(set == &train ? "training" : "validation") +
                    " row " + std::to_string(i / m.cols) + " holds NaN or Inf");
            }
        }
    }
    return validate(c.optimizer);
}

status check_sampler(const batch_sampler &s, const train_config &c) {
    if (s.multi_people() == 0) {
        return invalid_argument(
            "training: no person has >= 2 images, so no batch can ever hold "
            "an anchor-positive pair");
    }
    const bool singles_in_batches =
        s.single_people() > 0 && c.singletons_per_batch > 0;
    if (s.multi_people() == 1 && !singles_in_batches) {
        return invalid_argument(
            "training: only one person with >= 2 images and no single-image "
            "people in the batches (" +
            std::to_string(s.single_people()) +
            " available, S=" + std::to_string(c.singletons_per_batch) +
            "), so no batch can ever hold a negative");
    }
    return status::ok();
}

std::vector<float> gather_rows(const feature_matrix &m,
                               const std::vector<size_t> &rows) {
    std::vector<float> x(rows.size() * m.cols);
    for (size_t i = 0; i < rows.size(); ++i) {
        std::copy_n(m.data.data() + rows[i] * m.cols, m.cols,
                    x.data() + i * m.cols);
    }
    return x;
}

double rank1_of(const std::vector<float> &emb, const feature_set &s,
                size_t dim) {
    std::vector<std::vector<size_t>> rows = rows_by_person(s);
    std::vector<float> gallery;
    std::vector<int> gallery_person;
    std::vector<float> probes;
    std::vector<int> truth;
    for (auto &r : rows) {
        if (r.size() < 2)
            continue;
        const int id = static_cast<int>(gallery_person.size());
        gallery_person.push_back(id);
        gallery.insert(gallery.end(), emb.begin() + r[0] * dim,
                       emb.begin() + (r[0] + 1) * dim);
        for (size_t i = 1; i < r.size(); ++i) {
            probes.insert(probes.end(), emb.begin() + r[i] * dim,
                          emb.begin() + (r[i] + 1) * dim);
            truth.push_back(id);
        }
    }
    if (truth.empty())
        return 0;

    const size_t g = gallery_person.size();
    std::vector<float> d =
        nearest_per_person(gallery, gallery_person, g, probes, dim);
    size_t hits = 0;
    for (size_t i = 0; i < truth.size(); ++i) {
        const float *row = d.data() + i * g;
        const float own = row[truth[i]];
        bool first = true;
        for (size_t j = 0; j < g && first; ++j) {
            first = static_cast<int>(j) == truth[i] || row[j] > own;
        }
        hits += first ? 1 : 0;
    }
    return static_cast<double>(hits) / static_cast<double>(truth.size());
}

nlohmann::json metrics_json(const validation_metrics &m) {
    return {{"accuracy", m.accuracy},
            {"auc", m.auc},
            {"tar_at_far_1e-3", m.at_far_1e3.tar},
            {"threshold_at_far_1e-3", m.at_far_1e3.threshold},
            {"far_1e-3_resolved", m.at_far_1e3.far_resolved},
            {"rank1", m.rank1}};
}

bool all_finite(const std::vector<float> &v) {
    for (float x : v) {
        if (!std::isfinite(x))
            return false;
    }
    return true;
}

status diverged(int epoch, size_t batch, const std::string &what) {
    return status(error_code::internal,
                  "training diverged: epoch " + std::to_string(epoch) +
                      " batch " + std::to_string(batch) + ": " + what +
                      " is NaN or Inf (lower the learning rate)");
}

// Runs one epoch over the sampler's batches, updating head in place.
status run_epoch(int epoch, const feature_set &train, const train_config &c,
                 size_t batches, batch_sampler *s, embedding_head *head,
                 optimizer *opt, epoch_record *rec,
                 const batch_callback &on_batch) {
    const size_t out = head->config().output_dim;
    size_t with_triplets = 0;
    double loss_sum = 0;
    head_activations acts;
    std::vector<std::vector<float>> grads;
    s->start_epoch();

    for (size_t b = 0; b < batches; ++b) {
        const double t = (epoch - 1) + static_cast<double>(b) / batches;
        const float lr = scheduled_lr(c.optimizer, t, c.epochs);
        std::vector<size_t> rows = s->batch(b);
        std::vector<int> labels(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
            labels[i] = train.label[rows[i]];
        }

        // Forward, mine, loss.
        std::vector<float> x = gather_rows(train.features, rows);
        head->forward_train(x.data(), rows.size(), &acts);
        if (!all_finite(acts.y)) {
            return diverged(epoch, b, "an embedding");
        }
        std::vector<float> d =
            pairwise_squared_l2(acts.y.data(), rows.size(), out);
        std::vector<triplet> ts =
            mine_triplets(d, labels, c.mining_kind, c.margin);
        const bool fallback = ts.empty() && c.mining_kind == mining::semi_hard;
        if (fallback)
            ts = mine_triplets(d, labels, mining::batch_hard, c.margin);
        std::vector<float> gy(acts.y.size());
        triplet_loss_value v = triplet_loss(acts.y.data(), rows.size(), out, ts,
                                            c.margin, gy.data());
        logger()->debug(
            "epoch {} batch {}: {} valid triplets{}, {} active, loss {}", epoch,
            b, v.triplets, fallback ? " (batch-hard fallback)" : "", v.active,
            v.loss);
        if (on_batch)
            on_batch({epoch, b, v.triplets, v.active, v.loss, fallback});
        if (!std::isfinite(v.loss))
            return diverged(epoch, b, "the loss");
        rec->triplets_per_batch += static_cast<double>(v.triplets);
        rec->active_per_batch += static_cast<double>(v.active);
        rec->min_triplets =
            b == 0 ? v.triplets : std::min(rec->min_triplets, v.triplets);
        rec->fallback_batches += fallback && v.triplets > 0 ? 1 : 0;
        if (v.triplets == 0) {
            ++rec->batches_without_triplets;
            continue;
        }

        // Backward and update.
        ++with_triplets;
        loss_sum += v.loss;
        head->backward(acts, gy.data(), &grads);
        opt->step(head->mutable_tensors(), grads, lr);
        if (!head->all_finite())
            return diverged(epoch, b, "a weight");
    }
    rec->loss = with_triplets > 0 ? loss_sum / with_triplets : 0;
    rec->triplets_per_batch /= static_cast<double>(batches);
    rec->active_per_batch /= static_cast<double>(batches);
    return status::ok();
}

}  // namespace

result<validation_pairs> make_validation_pairs(const feature_set &set,
                                               size_t per_class,
                                               uint64_t seed) {
    std::vector<std::vector<size_t>> rows = rows_by_person(set);
    validation_pairs all_same;
    for (const auto &r : rows) {
        for (size_t i = 0; i < r.size(); ++i) {
            for (size_t j = i + 1; j < r.size(); ++j) {
                all_same.a.push_back(r[i]);
                all_same.b.push_back(r[j]);
            }
        }
    }
    if (all_same.a.empty() || rows.size() < 2) {
        return invalid_argument(
            "validation pairs: need a person with >= 2 images and >= 2 "
            "people");
    }

    // Sample genuine pairs, then as many impostor pairs.
    rng r(seed);
    std::vector<size_t> pick(all_same.a.size());
    std::iota(pick.begin(), pick.end(), size_t{0});
    shuffle(pick, r);
    pick.resize(std::min(per_class, pick.size()));
    std::sort(pick.begin(), pick.end());
    validation_pairs out;
    for (size_t k : pick) {
        out.a.push_back(all_same.a[k]);
        out.b.push_back(all_same.b[k]);
        out.same.push_back(1);
    }
    const size_t n = set.label.size();
    for (size_t k = 0; k < pick.size();) {
        size_t i = r.below(n);
        size_t j = r.below(n);
        if (set.label[i] == set.label[j])
            continue;
        out.a.push_back(i);
        out.b.push_back(j);
        out.same.push_back(0);
        ++k;
    }
    return out;
}

result<validation_pairs> lfw_validation_pairs(
    const lfw_pairs &pairs, const std::vector<image_ref> &rows,
    const std::string &name) {
    std::map<std::pair<std::string, int>, size_t> row_of;
    for (size_t i = 0; i < rows.size(); ++i) {
        row_of.emplace(std::make_pair(rows[i].person, rows[i].number), i);
    }
    auto find = [&](const image_ref &ref, size_t k) -> result<size_t> {
        auto it = row_of.find({ref.person, ref.number});
        if (it == row_of.end()) {
            return invalid_argument(
                name + ": pair " + std::to_string(k + 1) + " names " +
                ref.person + " image " + std::to_string(ref.number) +
                ", which is not among the validation images (is the "
                "people list the one that goes with this pairs file?)");
        }
        return it->second;
    };

    validation_pairs out;
    for (size_t k = 0; k < pairs.pairs.size(); ++k) {
        const lfw_pair &p = pairs.pairs[k];
        result<size_t> a = find(p.a, k);
        if (!a)
            return a.error();
        result<size_t> b = find(p.b, k);
        if (!b)
            return b.error();
        out.a.push_back(a.value());
        out.b.push_back(b.value());
        out.same.push_back(p.same ? 1 : 0);
    }
    return out;
}

namespace {

// Verification and rank-1 of validation embeddings (rows x dim).
result<validation_metrics> measure(const std::vector<float> &emb, size_t dim,
                                   const validation_set &val) {
    const feature_matrix &m = val.set.features;
    const validation_pairs &p = val.pairs;
    std::vector<float> d(p.same.size());
    std::vector<int> fold(p.same.size());
    for (size_t i = 0; i < p.same.size(); ++i) {
        if (p.a[i] >= m.rows || p.b[i] >= m.rows) {
            return invalid_argument("validation: pair " + std::to_string(i) +
                                    " names a row beyond " +
                                    std::to_string(m.rows));
        }
        d[i] = squared_l2(emb.data() + p.a[i] * dim, emb.data() + p.b[i] * dim,
                          dim);
        fold[i] = static_cast<int>(i % kValidationFolds);
    }
    result<verification_report> v = evaluate_verification(
        d, p.same,
        p.same.size() >= 2 * kValidationFolds ? std::span<const int>(fold)
                                              : std::span<const int>());
    if (!v)
        return v.error().with_context("validation");

    validation_metrics out;
    out.accuracy = v->accuracy_mean;
    out.auc = v->auc;
    out.at_far_1e3 = v->at_far_1e3;
    out.rank1 = rank1_of(emb, val.set, dim);
    return out;
}

}  // namespace

result<validation_metrics> validate(const embedding_head &head,
                                    const validation_set &val) {
    const feature_matrix &m = val.set.features;
    if (m.cols != head.config().input_dim) {
        return invalid_argument("validation: features have dim " +
                                std::to_string(m.cols) + ", the head expects " +
                                std::to_string(head.config().input_dim));
    }
    const size_t dim = head.config().output_dim;
    std::vector<float> emb(m.rows * dim);
    head.embed(m.data.data(), m.rows, emb.data());
    return measure(emb, dim, val);
}

result<validation_metrics> validate_features(const validation_set &val) {
    return measure(val.set.features.data, val.set.features.cols, val);
}

result<train_result> train_head(const feature_set &train,
                                const validation_set &val,
                                const train_config &config,
                                const batch_callback &on_batch) {
    FACEVEC_RETURN_IF_ERROR(check_config(train, val, config));
    batch_sampler sampler(train, config);
    FACEVEC_RETURN_IF_ERROR(check_sampler(sampler, config));

    head_config hc = config.head;
    hc.input_dim = train.features.cols;
    result<embedding_head> created =
        embedding_head::create(hc, config.seed ^ kInitSalt);
    if (!created)
        return created.error();
    embedding_head head = std::move(created.value());

    train_result r;
    result<validation_metrics> vb = validate_features(val);
    if (!vb)
        return vb.error();
    r.backbone = vb.value();
    result<validation_metrics> v0 = validate(head, val);
    if (!v0)
        return v0.error();
    r.untrained = v0.value();
    r.head = head;
    double best = r.untrained.accuracy;
    const size_t per_batch =
        std::min(config.persons_per_batch, sampler.multi_people());
    const size_t batches =
        config.batches_per_epoch > 0
            ? config.batches_per_epoch
            : (sampler.multi_people() + per_batch - 1) / per_batch;

    optimizer opt(config.optimizer);
    int since_best = 0;
    for (int e = 1; e <= config.epochs; ++e) {
        auto start = std::chrono::steady_clock::now();
        epoch_record rec;
        rec.epoch = e;
        rec.learning_rate =
            scheduled_lr(config.optimizer, e - 1, config.epochs);
        FACEVEC_RETURN_IF_ERROR(run_epoch(e, train, config, batches, &sampler,
                                          &head, &opt, &rec, on_batch));
        result<validation_metrics> v = validate(head, val);
        if (!v)
            return v.error();
        rec.validation = v.value();
        rec.seconds = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
        logger()->info(
            "epoch {}: loss {:.4f}, {:.1f} triplets/batch (min {}, {} "
            "batch-hard fallbacks, {} skipped), val acc {:.4f}, TAR@1e-3 "
            "{:.4f}, rank-1 {:.4f}",
            e, rec.loss, rec.triplets_per_batch, rec.min_triplets,
            rec.fallback_batches, rec.batches_without_triplets,
            rec.validation.accuracy, rec.validation.at_far_1e3.tar,
            rec.validation.rank1);
        r.epochs.push_back(rec);

        // Keep the best; stop after `patience` epochs without progress.
        if (rec.validation.accuracy > best) {
            best = rec.validation.accuracy;
            r.best_epoch = e;
            r.head = head;
            since_best = 0;
        } else if (config.patience > 0 && ++since_best >= config.patience) {
            r.stopped_early = e < config.epochs;
            break;
        }
    }

    // Calibrate on the best head.
    std::vector<float> genuine, impostors;
    const size_t dim = r.head.config().output_dim;
    std::vector<float> emb(val.set.features.rows * dim);
    r.head.embed(val.set.features.data.data(), val.set.features.rows,
                 emb.data());
    for (size_t i = 0; i < val.pairs.same.size(); ++i) {
        float d = squared_l2(emb.data() + val.pairs.a[i] * dim,
                             emb.data() + val.pairs.b[i] * dim, dim);
        (val.pairs.same[i] != 0 ? genuine : impostors).push_back(d);
    }
    result<operating_point> cal =
        tar_at_far(genuine, impostors, config.calibration_far);
    if (!cal)
        return cal.error().with_context("calibration");
    r.calibration = cal.value();
    return r;
}

nlohmann::json report_json(const train_config &c, const train_result &r) {
    nlohmann::json j;
    j["config"] = {
        {"input_dim", r.head.config().input_dim},
        {"hidden_dim", c.head.hidden_dim},
        {"output_dim", c.head.output_dim},
        {"relu", c.head.relu},
        {"init", head_init_name(c.head.init)},
        {"mining", mining_name(c.mining_kind)},
        {"margin", c.margin},
        {"persons_per_batch", c.persons_per_batch},
        {"images_per_person", c.images_per_person},
        {"singletons_per_batch", c.singletons_per_batch},
        {"epochs", c.epochs},
        {"patience", c.patience},
        {"seed", c.seed},
        {"optimizer", optimizer_name(c.optimizer.kind)},
        {"learning_rate", c.optimizer.learning_rate},
        {"weight_decay", c.optimizer.weight_decay},
        {"schedule", schedule_name(c.optimizer.schedule)},
    };
    j["backbone"] = metrics_json(r.backbone);
    j["untrained"] = metrics_json(r.untrained);
    j["epochs"] = nlohmann::json::array();
    for (const epoch_record &e : r.epochs) {
        j["epochs"].push_back(
            {{"epoch", e.epoch},
             {"learning_rate", e.learning_rate},
             {"loss", e.loss},
             {"triplets_per_batch", e.triplets_per_batch},
             {"active_per_batch", e.active_per_batch},
             {"min_triplets_per_batch", e.min_triplets},
             {"semi_hard_fallback_batches", e.fallback_batches},
             {"batches_without_triplets", e.batches_without_triplets},
             {"seconds", e.seconds},
             {"validation", metrics_json(e.validation)}});
    }
    j["best_epoch"] = r.best_epoch;
    j["stopped_early"] = r.stopped_early;
    j["calibration"] = {{"far_target", c.calibration_far},
                        {"threshold", r.calibration.threshold},
                        {"distance", "squared_l2"},
                        {"tar", r.calibration.tar},
                        {"far", r.calibration.far},
                        {"far_resolved", r.calibration.far_resolved}};
    return j;
}

}  // namespace facevec::train
