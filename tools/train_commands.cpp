// facevec train: learns an embedding head on frozen backbone features with
// triplet loss (train/trainer.h).
//
// Features come either from .npy files with one person name per row
// (--features-train/--labels-train, --features-val/--labels-val), or from
// LFW-style face folders (--faces, --people-train, --people-val), embedded
// once by the chosen backbone and cached on disk beside --out. Validation
// pairs come from an LFW pairs file (--pairs-val, by default the pairs
// file that goes with --people-val, e.g. pairsDevTest.txt beside
// peopleDevTest.txt); without one they are sampled from the validation
// people, and the command says so.
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/models.h"
#include "embed/weights.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "train/eval.h"
#include "train/features.h"
#include "train/plot.h"
#include "train/trainer.h"

namespace facevec::cli {
namespace {

namespace fs = std::filesystem;

constexpr size_t kDefaultValidationPairs = 3000;

struct train_options {
    std::string features_train, labels_train, features_val, labels_val;
    std::string faces, people_train, people_val, pairs_val;
    std::string backbone = embed::kVgg16;
    std::string align = "center";
    std::string precision = "f32";
    int input_size = 0;
    std::string out, report, plot, export_model;
    std::string mining_name = "semi-hard";
    std::string optimizer_name = "adam";
    std::string schedule = "cosine";
    std::string init_name = "random";
    size_t validation_pairs = kDefaultValidationPairs;
    train::train_config config;
};

// The rows of an LFW people list: lfw/<name>/<name>_NNNN.jpg for every
// image the list counts.
struct image_list {
    std::vector<std::string> paths;
    std::vector<std::string> persons;
    std::vector<train::image_ref> refs;
};

// `file` as given when it exists, else the file of that name in the faces
// folder (LFW keeps its lists there), else as given (the caller reports
// it missing).
std::string resolve_data_file(const std::string &faces,
                              const std::string &file) {
    if (file.empty() || fs::exists(file))
        return file;
    const fs::path in_faces = fs::path(faces) / file;
    return fs::exists(in_faces) ? in_faces.string() : file;
}

// The LFW pairs file that goes with a people list: the same name with
// "people" replaced by "pairs" in the same folder (peopleDevTest.txt ->
// pairsDevTest.txt), or "" when there is none.
std::string sibling_pairs_file(const std::string &people) {
    constexpr std::string_view kPeople = "people";
    const fs::path p(people);
    const std::string name = p.filename().string();
    if (!name.starts_with(kPeople))
        return "";
    const fs::path pairs =
        p.parent_path() / ("pairs" + name.substr(kPeople.size()));
    return fs::exists(pairs) ? pairs.string() : "";
}

result<image_list> list_people_images(const std::string &faces,
                                      const std::string &people_file) {
    auto people = train::parse_people_file(people_file);
    if (!people)
        return people.error();
    image_list out;
    for (const train::person_count &p : *people) {
        for (int n = 1; n <= p.images; ++n) {
            out.paths.push_back(
                (fs::path(faces) / train::lfw_image_path({p.person, n}))
                    .string());
            out.persons.push_back(p.person);
            out.refs.push_back({p.person, n});
        }
    }
    return out;
}

// The backbone whose output the head learns from: vgg16's pooled conv
// features, or face-resnet's 128-D embedding.
result<std::unique_ptr<embed::embedder>> load_backbone(const train_options &o) {
    embed::embedder_options eo;
    eo.align = o.align;
    eo.input_size = o.input_size;
    auto prec = embed::parse_precision(o.precision);
    if (!prec)
        return prec.error();
    eo.prec = prec.value();
    if (o.backbone == embed::kVgg16) {
        eo.output = embed::kVgg16Features;
    } else if (o.backbone != embed::kFaceResnet) {
        return invalid_argument("--backbone '" + o.backbone +
                                "' is unknown; use vgg16 or face-resnet");
    }
    auto e = embed::embedder::load(o.backbone, eo);
    if (!e)
        return e.error();
    for (const std::string &note : (*e)->notes()) {
        std::fprintf(stderr, "facevec: note: %s\n", note.c_str());
    }
    return e;
}

// A feature set of LFW images and the image each row holds.
struct face_features {
    train::feature_set set;
    std::vector<train::image_ref> refs;
};

result<face_features> features_from_faces(const embed::embedder &e,
                                          const std::string &faces,
                                          const std::string &people,
                                          const std::string &cache) {
    auto list = list_people_images(faces, people);
    if (!list)
        return list.error();

    // Images are decoded as `facevec embed` decodes them (scaled JPEG
    // decoding down to what the network needs), so the head learns the
    // features it will see. The fingerprint covers weights, precision,
    // alignment and preprocessing; input size and decoding are spelled out.
    const auto &pre = e.preprocessing();
    embed::decode_options dopts;
    dopts.min_side = embed::decode_min_side(pre);
    train::feature_cache_key key{
        e.fingerprint(), "input " + std::to_string(pre.width) + "x" +
                             std::to_string(pre.height) + ", decode min side " +
                             std::to_string(dopts.min_side) + ", " +
                             e.fingerprint()};
    train::feature_cache fc(cache, key);
    progress bar("features " + fs::path(people).filename().string(),
                 list->paths.size());
    const auto start = std::chrono::steady_clock::now();
    auto m = fc.get(
        list->paths,
        [&](const std::string &path) -> result<std::vector<float>> {
            auto img = embed::decode_file(path, dopts);
            if (!img)
                return img.error();
            return e.embed_one(img.value(), path);
        },
        [&](size_t, size_t) { bar.advance(1); });
    bar.finish();
    if (!m)
        return m.error();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    if (fc.last_was_hit()) {
        std::fprintf(stderr, "facevec: %s features: cache hit (%zu x %zu)\n",
                     people.c_str(), m->rows, m->cols);
    } else {
        std::fprintf(stderr,
                     "facevec: %s features: computed %zu x %zu in %.1f s "
                     "(%.2f images/s)\n",
                     people.c_str(), m->rows, m->cols, seconds,
                     static_cast<double>(m->rows) / seconds);
    }
    auto set = train::make_feature_set(std::move(m.value()), list->persons);
    if (!set)
        return set.error();
    return face_features{std::move(set.value()), std::move(list->refs)};
}

// Validation pairs: the LFW pairs file when there is one, else sampled.
// Returns the pairs and says where they came from in `source`.
result<train::validation_pairs> validation_pairs_for(
    const train_options &o, const train::feature_set &val,
    const std::vector<train::image_ref> &refs, std::string *source) {
    std::string file = resolve_data_file(o.faces, o.pairs_val);
    if (file.empty() && !refs.empty())
        file = sibling_pairs_file(resolve_data_file(o.faces, o.people_val));
    if (!file.empty()) {
        if (refs.empty()) {
            return invalid_argument(
                "--pairs-val needs --faces/--people-val (feature files do "
                "not name their images)");
        }
        auto pairs = train::parse_lfw_pairs_file(file);
        if (!pairs)
            return pairs.error();
        *source = file;
        return train::lfw_validation_pairs(pairs.value(), refs, file);
    }
    *source = "sampled";
    std::fprintf(stderr,
                 "facevec: note: no validation pairs file (--pairs-val); "
                 "sampling %zu genuine and %zu impostor pairs of the "
                 "validation people\n",
                 o.validation_pairs, o.validation_pairs);
    return train::make_validation_pairs(val, o.validation_pairs, o.config.seed);
}

result<train::feature_set> features_from_files(const std::string &npy,
                                               const std::string &labels) {
    auto m = train::read_npy(npy);
    if (!m)
        return m.error();
    auto names = train::read_lines(labels);
    if (!names)
        return names.error();
    auto s = train::make_feature_set(std::move(m.value()), names.value());
    if (!s)
        return s.error().with_context(npy + " + " + labels);
    return s;
}

// The backbone's weights with the trained head in place of head/fc1 and
// head/fc2 (vgg16's head, or the head face-resnet takes after its 128-D
// output), loadable by `--model FILE` wherever a model is.
status export_model(const embed::embedder &e, const train::embedding_head &head,
                    const std::string &path) {
    if (!head.config().relu && head.config().hidden_dim > 0) {
        return invalid_argument(
            "--export-model: the exported head has a ReLU between its "
            "layers; train without --no-relu");
    }
    embed::weights_file w = e.weights();
    for (auto it = w.tensors.begin(); it != w.tensors.end();) {
        it = it->first.starts_with("head/") ? w.tensors.erase(it) : ++it;
    }
    const std::string fc1 = embed::kHeadFc1, fc2 = embed::kHeadFc2;
    const bool two = head.config().hidden_dim > 0;
    const std::vector<std::string> names =
        two ? std::vector<std::string>{fc1 + "/weight", fc1 + "/bias",
                                       fc2 + "/weight", fc2 + "/bias"}
            : std::vector<std::string>{fc2 + "/weight", fc2 + "/bias"};
    FACEVEC_ASSERT(names.size() == head.tensors().size(), "head tensor count");
    for (size_t i = 0; i < names.size(); ++i) {
        const train::named_tensor &t = head.tensors()[i];
        w.tensors[names[i]] = embed::tensor{t.shape, t.data};
    }
    w.params["dim"] = head.config().output_dim;
    w.params["hidden"] = head.config().hidden_dim;
    return embed::write_weights(path, w);
}

void print_summary(const train::train_result &r) {
    std::printf(
        "backbone output: accuracy %.4f, TAR@FAR=1e-3 %.4f, rank-1 %.4f\n",
        r.backbone.accuracy, r.backbone.at_far_1e3.tar, r.backbone.rank1);
    std::printf(
        "untrained head: accuracy %.4f, TAR@FAR=1e-3 %.4f, rank-1 "
        "%.4f\n",
        r.untrained.accuracy, r.untrained.at_far_1e3.tar, r.untrained.rank1);
    for (const train::epoch_record &e : r.epochs) {
        std::printf(
            "epoch %3d: lr %.2e loss %.4f triplets/batch %.1f | val "
            "accuracy %.4f TAR@1e-3 %.4f rank-1 %.4f (%.1fs)\n",
            e.epoch, static_cast<double>(e.learning_rate), e.loss,
            e.triplets_per_batch, e.validation.accuracy,
            e.validation.at_far_1e3.tar, e.validation.rank1, e.seconds);
    }
    std::printf(
        "best epoch %d%s; threshold %.6g (squared L2) at FAR %.2g "
        "(TAR %.4f)\n",
        r.best_epoch, r.stopped_early ? " (stopped early)" : "",
        static_cast<double>(r.calibration.threshold), r.calibration.far,
        r.calibration.tar);
}

status write_json(const std::string &path, const nlohmann::json &j) {
    std::ofstream out(path);
    out << j.dump(2) << "\n";
    if (!out.flush())
        return io_error(path + ": write failed");
    return status::ok();
}

status run_train(train_options o) {
    auto m = train::parse_mining(o.mining_name);
    if (!m)
        return m.error();
    o.config.mining_kind = m.value();
    auto k = train::parse_optimizer(o.optimizer_name);
    if (!k)
        return k.error();
    o.config.optimizer.kind = k.value();
    auto init = train::parse_head_init(o.init_name);
    if (!init)
        return init.error();
    o.config.head.init = init.value();
    auto s = train::parse_schedule(o.schedule);
    if (!s)
        return s.error();
    o.config.optimizer.schedule = s.value();

    // Features: from files, or from faces through the backbone.
    const bool from_files = !o.features_train.empty();
    std::unique_ptr<embed::embedder> backbone;
    result<train::feature_set> tr = invalid_argument("no training data");
    result<train::feature_set> va = invalid_argument("no validation data");
    std::vector<train::image_ref> val_refs;
    if (from_files) {
        if (o.labels_train.empty() || o.features_val.empty() ||
            o.labels_val.empty()) {
            return invalid_argument(
                "--features-train needs --labels-train, --features-val and "
                "--labels-val");
        }
        tr = features_from_files(o.features_train, o.labels_train);
        va = features_from_files(o.features_val, o.labels_val);
    } else {
        if (o.people_train.empty() || o.people_val.empty()) {
            return invalid_argument(
                "give --people-train and --people-val (with --faces), or "
                "--features-train/--labels-train/--features-val/"
                "--labels-val");
        }
        auto b = load_backbone(o);
        if (!b)
            return b.error();
        backbone = std::move(b.value());
        auto ft = features_from_faces(
            *backbone, o.faces, resolve_data_file(o.faces, o.people_train),
            o.out + ".train.features");
        if (!ft)
            return ft.error();
        tr = std::move(ft->set);
        auto fv = features_from_faces(*backbone, o.faces,
                                      resolve_data_file(o.faces, o.people_val),
                                      o.out + ".val.features");
        if (!fv)
            return fv.error();
        va = std::move(fv->set);
        val_refs = std::move(fv->refs);
    }
    if (!tr)
        return tr.error();
    if (!va)
        return va.error();

    train::validation_set val;
    val.set = std::move(va.value());
    std::string pairs_source;
    auto pairs = validation_pairs_for(o, val.set, val_refs, &pairs_source);
    if (!pairs)
        return pairs.error();
    val.pairs = std::move(pairs.value());
    std::fprintf(stderr, "facevec: validation: %zu pairs (%s), %zu images\n",
                 val.pairs.same.size(), pairs_source.c_str(),
                 val.set.features.rows);

    auto r = train::train_head(tr.value(), val, o.config);
    if (!r)
        return r.error();
    print_summary(r.value());

    // Outputs: head file, report, plot, optional exported model.
    nlohmann::json report = train::report_json(o.config, r.value());
    report["validation_pairs"] = {{"source", pairs_source},
                                  {"pairs", val.pairs.same.size()}};
    report["backbone_fingerprint"] = backbone ? backbone->fingerprint() : "";
    nlohmann::json meta = {
        {"threshold", r->calibration.threshold},
        {"threshold_far", o.config.calibration_far},
        {"distance", "squared_l2"},
        {"best_epoch", r->best_epoch},
        {"backbone", backbone ? backbone->fingerprint() : o.features_train}};
    FACEVEC_RETURN_IF_ERROR(train::save_head(o.out, r->head, meta));
    std::printf("head written to %s\n", o.out.c_str());
    const std::string report_path =
        o.report.empty() ? o.out + ".report.json" : o.report;
    FACEVEC_RETURN_IF_ERROR(write_json(report_path, report));
    if (!o.plot.empty()) {
        report["kind"] = "training";
        FACEVEC_RETURN_IF_ERROR(train::draw_plot(report, o.plot));
    }
    if (!o.export_model.empty()) {
        if (!backbone) {
            return invalid_argument(
                "--export-model needs a backbone run on --faces (feature "
                "files carry no backbone weights)");
        }
        FACEVEC_RETURN_IF_ERROR(
            export_model(*backbone, r->head, o.export_model));
        std::printf("model written to %s\n", o.export_model.c_str());
    }
    return status::ok();
}

void add_training_options(CLI::App *c, train_options *o) {
    train::train_config &t = o->config;
    c->add_option("--dim", t.head.output_dim, "Embedding dimension")
        ->capture_default_str();
    c->add_option("--hidden", t.head.hidden_dim,
                  "Hidden layer width; 0: one fully connected layer")
        ->capture_default_str();
    c->add_flag("!--no-relu", t.head.relu, "No ReLU between the layers");
    c->add_option("--init", o->init_name,
                  "Head weights: random (He) or identity (one layer: starts "
                  "as the backbone's output)")
        ->capture_default_str();
    c->add_option("--seed", t.seed, "Random seed")->capture_default_str();
    c->add_option("--epochs", t.epochs, "Maximum epochs")
        ->capture_default_str();
    c->add_option("--patience", t.patience,
                  "Stop after this many epochs without progress; 0: never")
        ->capture_default_str();
    c->add_option("--mining", o->mining_name, "semi-hard or batch-hard")
        ->capture_default_str();
    c->add_option("--margin", t.margin, "Triplet margin (squared L2)")
        ->capture_default_str();
    c->add_option("--persons-per-batch", t.persons_per_batch, "P")
        ->capture_default_str();
    c->add_option("--images-per-person", t.images_per_person, "K")
        ->capture_default_str();
    c->add_option("--singletons-per-batch", t.singletons_per_batch,
                  "Single-image people added to a batch as negatives")
        ->capture_default_str();
    c->add_option("--batches-per-epoch", t.batches_per_epoch,
                  "0: every multi-image person once per epoch")
        ->capture_default_str();
    c->add_option("--optimizer", o->optimizer_name, "adam or sgd")
        ->capture_default_str();
    c->add_option("--lr", t.optimizer.learning_rate, "Learning rate")
        ->capture_default_str();
    c->add_option("--weight-decay", t.optimizer.weight_decay, "Weight decay")
        ->capture_default_str();
    c->add_option("--momentum", t.optimizer.momentum, "SGD momentum")
        ->capture_default_str();
    c->add_option("--schedule", o->schedule, "constant, cosine or step")
        ->capture_default_str();
    c->add_option("--step-epochs", t.optimizer.step_epochs,
                  "Step schedule period")
        ->capture_default_str();
    c->add_option("--validation-pairs", o->validation_pairs,
                  "Without a pairs file: genuine (and as many impostor) "
                  "pairs sampled from the validation people")
        ->capture_default_str();
}

}  // namespace

void register_train_commands(CLI::App &app) {
    auto o = std::make_shared<train_options>();
    CLI::App *c = app.add_subcommand(
        "train",
        "Train an embedding head with triplet loss on frozen "
        "backbone features");
    c->add_option("--out", o->out, "Head file to write")->required();
    c->add_option("--faces", o->faces, "LFW-style faces folder")
        ->default_str(default_faces_dir());
    c->add_option("--people-train", o->people_train,
                  "People list for training (e.g. peopleDevTrain.txt)");
    c->add_option("--people-val", o->people_val,
                  "People list for validation (disjoint people)");
    c->add_option("--backbone", o->backbone, "vgg16 or face-resnet")
        ->capture_default_str();
    c->add_option("--align", o->align, "Face crop: none or center")
        ->capture_default_str();
    c->add_option("--precision", o->precision,
                  "Backbone precision: f32 or bf16")
        ->capture_default_str();
    c->add_option("--input-size", o->input_size,
                  "vgg16: network input side (e.g. 112); 0: the model's");
    c->add_option("--pairs-val", o->pairs_val,
                  "LFW pairs file of the validation people (default: the "
                  "pairs file beside --people-val, e.g. pairsDevTest.txt)");
    c->add_option("--features-train", o->features_train,
                  "Training features .npy (instead of --faces)");
    c->add_option("--labels-train", o->labels_train,
                  "One person name per training row");
    c->add_option("--features-val", o->features_val, "Validation .npy");
    c->add_option("--labels-val", o->labels_val,
                  "One person name per validation row");
    c->add_option("--report", o->report,
                  "JSON report of every epoch (default OUT.report.json)");
    c->add_option("--plot", o->plot, "PNG of loss and validation curves");
    c->add_option("--export-model", o->export_model,
                  "Also write a weights file: backbone + trained head");
    add_training_options(c, o.get());

    c->callback([o]() {
        if (o->faces.empty())
            o->faces = default_faces_dir();
        try {
            status s = run_train(*o);
            if (!s.is_ok())
                fail(s);
        } catch (const std::exception &e) {
            fail(std::string("internal error: ") + e.what());
        }
    });
}

}  // namespace facevec::cli
