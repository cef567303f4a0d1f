// The photo subcommands: enroll, eval, calibrate, demo, and the image
// form of query. They run the photo pipeline (api/faces.h) over files,
// folders or manifests, going on past bad files and naming each one.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/engine.h"
#include "api/faces.h"
#include "api/json.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/csv.h"
#include "train/eval.h"
#include "train/plot.h"

namespace facevec::cli {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

// Files handed to the pipeline at once: bounds memory while enrolling
// any number of photos, and is one atomic write to the database.
constexpr size_t kChunkFiles = 256;
constexpr double kDefaultCalibrationFar = 1e-3;
// Exit status when the job finished but some inputs failed.
constexpr int kExitSomeFailed = 3;

double seconds_since(clock_type::time_point t) {
    return std::chrono::duration<double>(clock_type::now() - t).count();
}

// One photo to enroll and the person it shows.
struct labelled_file {
    std::string path;
    std::string person;
};

// The person-per-folder layout: DIR/<person>/<image>. A DIR holding an
// lfw/ folder (the LFW download) is read from there. Files and persons in
// name order; hidden entries skipped.
result<std::vector<labelled_file>> list_person_folders(const std::string &dir) {
    fs::path root = dir;
    std::error_code ec;
    if (fs::is_directory(root / "lfw", ec))
        root /= "lfw";
    if (!fs::is_directory(root, ec)) {
        return not_found(dir + ": not a folder");
    }
    std::vector<fs::path> persons;
    for (auto &e : fs::directory_iterator(root, ec)) {
        if (e.is_directory() && e.path().filename().string()[0] != '.') {
            persons.push_back(e.path());
        }
    }
    if (ec)
        return io_error(dir + ": " + ec.message());
    std::sort(persons.begin(), persons.end());
    std::vector<labelled_file> out;
    for (auto &p : persons) {
        std::vector<fs::path> files;
        for (auto &e : fs::directory_iterator(p, ec)) {
            if (e.is_regular_file() && e.path().filename().string()[0] != '.') {
                files.push_back(e.path());
            }
        }
        std::sort(files.begin(), files.end());
        for (auto &f : files) {
            out.push_back({f.string(), p.filename().string()});
        }
    }
    return out;
}

// A CSV manifest (tools/csv.h: RFC 4180 quoting) with the columns path
// and person, named by an optional header. Relative paths are relative
// to the manifest's folder. Labels holding commas are quoted.
result<std::vector<labelled_file>> read_manifest(const std::string &file) {
    auto m = manifest_reader::open(file, {"path", "person"}, {"path", "person"},
                                   {"path", "person"});
    if (!m)
        return m.error();
    std::vector<labelled_file> out;
    std::vector<std::string> values;
    for (;;) {
        auto got = (*m)->next(values);
        if (!got)
            return got.error();
        if (!*got)
            return out;
        if (values[0].empty() || values[1].empty()) {
            return invalid_argument((*m)->where() +
                                    ": expected a path and a person");
        }
        out.push_back({(*m)->resolve(values[0]), values[1]});
    }
}

result<std::vector<labelled_file>> list_enroll_input(const std::string &in) {
    std::error_code ec;
    if (fs::is_directory(in, ec))
        return list_person_folders(in);
    if (fs::is_regular_file(in, ec))
        return read_manifest(in);
    return not_found(in + ": no such folder or manifest");
}

// Images given on the command line: files as they are, folders walked
// recursively in name order.
std::vector<std::string> expand_inputs(const std::vector<std::string> &in) {
    std::vector<std::string> out;
    for (auto &x : in) {
        std::error_code ec;
        if (!fs::is_directory(x, ec)) {
            out.push_back(x);
            continue;
        }
        std::vector<std::string> found;
        for (auto &e : fs::recursive_directory_iterator(x, ec)) {
            if (e.is_regular_file())
                found.push_back(e.path().string());
        }
        std::sort(found.begin(), found.end());
        out.insert(out.end(), found.begin(), found.end());
    }
    return out;
}

// Pipeline options that reproduce a database's model: the architecture
// and alignment come from its fingerprint ("<arch>-<prec>-<align>-<hex>")
// unless the user names a model; the fingerprint must then match.
struct model_options {
    std::string model;
    std::string precision = "f32";
    std::string align = "auto";
    std::string faces = "one";
    bool center_fallback = false;
    bool mirror = false;
    int batch = 32;
};

void add_model_options(CLI::App *c, model_options *m, bool with_faces) {
    c->add_option("--model", m->model,
                  "face-resnet, vgg16 or a weights file "
                  "(default: the database's, else face-resnet)");
    c->add_option("--precision", m->precision, "f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}));
    c->add_option("--align", m->align, "auto, none or center")
        ->check(CLI::IsMember({"auto", "none", "center"}));
    if (with_faces) {
        c->add_option("--faces", m->faces,
                      "Faces per photo: one (else an error), largest, "
                      "central or all")
            ->check(CLI::IsMember({"one", "largest", "central", "all"}));
    }
    c->add_flag("--center-fallback", m->center_fallback,
                "Embed a centre crop when no face is found (reported)");
    c->add_flag("--mirror", m->mirror,
                "Average each face's embedding with its mirror image's");
    c->add_option("--batch", m->batch, "Faces per network run")
        ->check(CLI::PositiveNumber);
}

result<face_pipeline_options> pipeline_options(const model_options &m,
                                               const std::string &db_fp) {
    face_pipeline_options o;
    if (!db_fp.empty()) {
        // The database's fingerprint fixes the model's settings.
        auto from_db = options_for_fingerprint(db_fp);
        if (!from_db)
            return from_db.error();
        o = *from_db;
        if (!m.model.empty())
            o.model = m.model;
        o.mirror = o.mirror || m.mirror;
    } else {
        o.model = m.model.empty() ? "face-resnet" : m.model;
        o.prec = m.precision == "bf16" ? embed::precision::bf16
                                       : embed::precision::f32;
        auto mode = embed::parse_align_mode(m.align);
        if (!mode)
            return mode.error();
        o.align = *mode;
        o.mirror = m.mirror;
    }
    o.center_fallback = m.center_fallback;
    o.batch = m.batch;
    return o;
}

// Opens `db`, creating it for the pipeline's model (dim, fingerprint,
// normalisation, default threshold) when it is missing; an existing one
// must hold that model's embeddings.
result<std::unique_ptr<engine>> open_for(const std::string &db,
                                         const face_pipeline &p) {
    engine_options eo;
    eo.create_if_missing = true;
    eo.meta.dim = p.dim();
    eo.meta.model_fingerprint = p.fingerprint();
    eo.meta.normalized = p.normalized();
    eo.meta.threshold = p.default_threshold();
    return engine::open(db, eo);
}

// Embeds `paths` chunk by chunk with a progress line; calls `done` with
// each chunk's results.
template <typename Fn>
void embed_all(const face_pipeline &p, const std::vector<std::string> &paths,
               face_policy policy, const std::string &what, Fn &&done) {
    progress bar(what, paths.size());
    for (size_t at = 0; at < paths.size(); at += kChunkFiles) {
        size_t n = std::min(kChunkFiles, paths.size() - at);
        auto res = p.process({paths.data() + at, n}, policy);
        done(at, res);
        bar.advance(n);
    }
    bar.finish();
}

// ---- enroll ----

struct enroll_options {
    std::string db;
    std::string input;
    model_options model;
    bool strict = false;
};

void run_enroll(const enroll_options &o) {
    auto start = clock_type::now();
    auto files = list_enroll_input(o.input);
    if (!files)
        return fail(files.error());

    // The database, if it exists, fixes the model.
    std::string db_fp;
    {
        engine_options probe;
        std::error_code ec;
        if (fs::exists(o.db, ec)) {
            auto e = engine::open(o.db, probe);
            if (!e)
                return fail(e.error());
            db_fp = (*e)->meta().model_fingerprint;
        }
    }
    auto po = pipeline_options(o.model, db_fp);
    if (!po)
        return fail(po.error());
    auto policy = parse_face_policy(o.model.faces);
    if (!policy)
        return fail(policy.error());
    auto pipe = face_pipeline::create(*po);
    if (!pipe)
        return fail(pipe.error());

    auto eng = open_for(o.db, **pipe);
    if (!eng)
        return fail(eng.error());
    engine &e = **eng;

    size_t enrolled = 0, skipped = 0, failed = 0;
    progress bar("enroll", files->size());
    for (size_t at = 0; at < files->size(); at += kChunkFiles) {
        size_t n = std::min(kChunkFiles, files->size() - at);

        // Files this person already has (same bytes) are not decoded.
        std::vector<std::string> todo;
        std::vector<size_t> todo_pos;
        for (size_t i = at; i < at + n; ++i) {
            const auto &f = (*files)[i];
            auto h = face_pipeline::hash_file(f.path);
            if (h && e.store().has_content(f.person, *h)) {
                ++skipped;
                continue;
            }
            todo.push_back(f.path);
            todo_pos.push_back(i);
        }

        auto res = (*pipe)->process(todo, *policy);
        std::vector<enroll_item> items;
        std::vector<size_t> item_file;
        for (size_t j = 0; j < res.size(); ++j) {
            const auto &r = res[j];
            if (!r.error.is_ok()) {
                std::fprintf(stderr, "facevec: enroll: %s\n",
                             r.error.message().c_str());
                ++failed;
                continue;
            }
            if (r.fallback) {
                std::fprintf(stderr,
                             "facevec: enroll: %s: no face found, "
                             "embedded the centre crop\n",
                             r.path.c_str());
            }
            for (const auto &face : r.faces) {
                enroll_item it;
                it.person = (*files)[todo_pos[j]].person;
                it.embedding = face.embedding;
                it.source = r.path;
                it.content_hash = r.content_hash;
                items.push_back(std::move(it));
                item_file.push_back(j);
            }
        }
        auto rep = e.enroll(items, o.strict);
        if (!rep)
            return fail(rep.error());
        enrolled += rep->enrolled.size();
        skipped += rep->skipped.size();
        for (const auto &err : rep->errors) {
            std::fprintf(stderr, "facevec: enroll: %s: %s\n",
                         res[item_file[err.item]].path.c_str(),
                         err.error.message().c_str());
            ++failed;
        }
        bar.advance(n);
    }
    bar.finish();

    double secs = seconds_since(start);
    std::printf(
        "enrolled %zu, skipped %zu (already enrolled), failed %zu in %.1f s "
        "(%.1f images/s)\n",
        enrolled, skipped, failed, secs,
        secs > 0 ? (enrolled + failed) / secs : 0.0);
    if (failed > 0)
        set_exit_code(kExitSomeFailed);
}

void register_enroll(CLI::App &app) {
    auto o = std::make_shared<enroll_options>();
    CLI::App *c = app.add_subcommand(
        "enroll",
        "Enroll photos: DIR/<person>/<image> folders or a path,person CSV");
    c->add_option("--db", o->db, "Database directory (created if missing)")
        ->required();
    c->add_option("input", o->input, "Folder of person folders, or CSV")
        ->required();
    add_model_options(c, &o->model, true);
    c->add_flag("--strict", o->strict,
                "Refuse a whole chunk when any of its faces is invalid");
    c->callback([o] { run([&] { run_enroll(*o); }); });
}

// ---- shared by eval, calibrate and demo ----

// Embeddings of many photos, keyed by path, for the evaluations: every
// photo gives one face (the central one); where none is found the centre
// crop stands in and the photo is counted as no_face.
struct embedded_set {
    std::map<std::string, std::vector<float>> by_path;
    std::vector<std::string> failed;   // unreadable or undecodable
    std::vector<std::string> no_face;  // centre crop used
    double seconds = 0;
};

embedded_set embed_set(const face_pipeline &p,
                       const std::vector<std::string> &paths,
                       const std::string &what) {
    embedded_set out;
    auto start = clock_type::now();
    embed_all(p, paths, face_policy::central, what,
              [&](size_t, const std::vector<photo_faces> &res) {
                  for (const auto &r : res) {
                      if (!r.error.is_ok() || r.faces.empty()) {
                          std::fprintf(stderr, "facevec: %s: %s\n",
                                       what.c_str(), r.error.message().c_str());
                          out.failed.push_back(r.path);
                          continue;
                      }
                      if (r.fallback)
                          out.no_face.push_back(r.path);
                      out.by_path[r.path] = r.faces.front().embedding;
                  }
              });
    out.seconds = seconds_since(start);
    return out;
}

// A pairs file given by a name that does not exist here is looked for in
// the faces folder, where LFW keeps pairs.txt and its siblings.
std::string resolve_pairs_file(const std::string &pairs,
                               const std::string &faces) {
    if (fs::path(pairs).is_relative() && !fs::exists(pairs)) {
        return (fs::path(faces) / pairs).string();
    }
    return pairs;
}

// The pairs of a pairs file whose two images were embedded, with their
// squared distances.
struct pair_distances {
    std::vector<float> distance;
    std::vector<uint8_t> same;
    std::vector<int> fold;
    size_t missing = 0;  // pairs with an image that failed
};

result<pair_distances> pairs_from_file(const face_pipeline &p,
                                       const std::string &faces_dir,
                                       const std::string &pairs_file,
                                       embedded_set &set) {
    auto pairs = train::parse_lfw_pairs_file(pairs_file);
    if (!pairs)
        return pairs.error();
    std::set<std::string> unique;
    auto path_of = [&](const train::image_ref &r) {
        return (fs::path(faces_dir) / train::lfw_image_path(r)).string();
    };
    for (const auto &pr : pairs->pairs) {
        unique.insert(path_of(pr.a));
        unique.insert(path_of(pr.b));
    }
    set = embed_set(p, {unique.begin(), unique.end()}, "embed");
    pair_distances d;
    for (const auto &pr : pairs->pairs) {
        auto a = set.by_path.find(path_of(pr.a));
        auto b = set.by_path.find(path_of(pr.b));
        if (a == set.by_path.end() || b == set.by_path.end()) {
            ++d.missing;
            continue;
        }
        d.distance.push_back(train::squared_l2(
            a->second.data(), b->second.data(), a->second.size()));
        d.same.push_back(pr.same ? 1 : 0);
        d.fold.push_back(pairs->folds > 1 ? pr.fold : 0);
    }
    return d;
}

// ---- eval ----

struct eval_options {
    std::string faces;
    std::string pairs;
    bool openset = false;
    bool json = false;
    std::string plot;
    model_options model;
};

void run_eval_pairs(const eval_options &o, const face_pipeline &p) {
    std::string pairs_file = resolve_pairs_file(o.pairs, o.faces);
    embedded_set set;
    auto d = pairs_from_file(p, o.faces, pairs_file, set);
    if (!d)
        return fail(d.error());
    auto rep = train::evaluate_verification(d->distance, d->same, d->fold);
    if (!rep)
        return fail(rep.error().with_context(pairs_file));

    ojson j;
    j["pairs_file"] = pairs_file;
    j["pairs"] = d->distance.size();
    j["folds"] = rep->fold_accuracy.size();
    j["accuracy"] = rep->accuracy_mean;
    j["accuracy_std"] = rep->accuracy_std;
    j["threshold"] = api::json_number(rep->best_threshold);
    j["roc_auc"] = rep->auc;
    j["tar_at_far_1e-2"] = rep->at_far_1e2.tar;
    j["tar_at_far_1e-3"] = rep->at_far_1e3.tar;
    j["threshold_at_far_1e-3"] = api::json_number(rep->at_far_1e3.threshold);
    j["no_face"] = set.no_face.size();
    j["failed_images"] = set.failed.size();
    j["pairs_skipped"] = d->missing;
    j["model"] = p.fingerprint();
    j["images_per_s"] =
        set.seconds > 0 ? set.by_path.size() / set.seconds : 0.0;
    if (o.json) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf(
            "pairs %zu (%zu folds): accuracy %.4f +- %.4f, ROC AUC %.4f\n"
            "TAR %.4f at FAR 1e-2, %.4f at FAR 1e-3; threshold %.4f\n"
            "no face found in %zu images (centre crop used), %zu failed\n",
            d->distance.size(), rep->fold_accuracy.size(), rep->accuracy_mean,
            rep->accuracy_std, rep->auc, rep->at_far_1e2.tar,
            rep->at_far_1e3.tar, double(rep->best_threshold),
            set.no_face.size(), set.failed.size());
    }
    if (!o.plot.empty()) {
        auto data = train::verification_plot_data(d->distance, d->same, *rep);
        auto st = train::draw_plot(data, o.plot);
        if (!st.is_ok())
            fail(st);
    }
}

// Known and unknown probes' distances to each gallery person.
struct open_set_run {
    train::open_set_report report;
    train::open_set_split split;
    embedded_set set;
};

result<open_set_run> run_open_set(const face_pipeline &p,
                                  const std::string &faces) {
    auto files = list_person_folders(faces);
    if (!files)
        return files.error();
    std::map<std::string, std::vector<std::string>> by_person;
    for (auto &f : *files)
        by_person[f.person].push_back(f.path);

    open_set_run r;
    r.split = train::split_open_set(by_person);
    std::vector<std::string> all;
    for (auto *v : {&r.split.gallery, &r.split.known, &r.split.unknown}) {
        for (auto &x : *v)
            all.push_back(x.file);
    }
    r.set = embed_set(p, all, "embed");

    // Gallery persons in split order; probes whose photo failed are left
    // out (reported by embed_set).
    std::map<std::string, int> person_id;
    std::vector<float> gallery;
    std::vector<int> gallery_person;
    for (auto &g : r.split.gallery) {
        auto it = r.set.by_path.find(g.file);
        if (it == r.set.by_path.end())
            continue;
        int id = static_cast<int>(person_id.size());
        person_id.emplace(g.person, id);
        gallery.insert(gallery.end(), it->second.begin(), it->second.end());
        gallery_person.push_back(id);
    }
    const size_t dim = p.dim();
    std::vector<float> known, unknown;
    std::vector<int> truth;
    for (auto &k : r.split.known) {
        auto it = r.set.by_path.find(k.file);
        auto pid = person_id.find(k.person);
        if (it == r.set.by_path.end() || pid == person_id.end())
            continue;
        known.insert(known.end(), it->second.begin(), it->second.end());
        truth.push_back(pid->second);
    }
    for (auto &u : r.split.unknown) {
        auto it = r.set.by_path.find(u.file);
        if (it == r.set.by_path.end())
            continue;
        unknown.insert(unknown.end(), it->second.begin(), it->second.end());
    }
    const size_t persons = person_id.size();
    auto dk =
        train::nearest_per_person(gallery, gallery_person, persons, known, dim);
    auto du = train::nearest_per_person(gallery, gallery_person, persons,
                                        unknown, dim);
    auto rep = train::evaluate_open_set(dk, truth, du, persons);
    if (!rep)
        return rep.error();
    r.report = *rep;
    return r;
}

void run_eval_openset(const eval_options &o, const face_pipeline &p) {
    auto r = run_open_set(p, o.faces);
    if (!r)
        return fail(r.error());
    const auto &rep = r->report;
    ojson j;
    j["rank1"] = rep.rank1;
    j["rank5"] = rep.rank5;
    j["dir_at_far_1e-2"] = rep.at_far_1e2.dir;
    j["dir_at_far_1e-3"] = rep.at_far_1e3.dir;
    j["threshold_at_far_1e-2"] =
        api::json_number(rep.at_far_1e2.threshold.threshold);
    j["threshold_at_far_1e-3"] =
        api::json_number(rep.at_far_1e3.threshold.threshold);
    j["gallery"] = rep.gallery;
    j["known_probes"] = rep.known;
    j["unknown_probes"] = rep.unknown;
    j["no_face"] = r->set.no_face.size();
    j["failed_images"] = r->set.failed.size();
    j["model"] = p.fingerprint();
    if (o.json) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        std::printf(
            "open set: gallery %zu, known probes %zu, unknown probes %zu\n"
            "rank-1 %.4f, rank-5 %.4f\n"
            "DIR %.4f at FAR 1e-2, %.4f at FAR 1e-3\n"
            "no face found in %zu images (centre crop used), %zu failed\n",
            rep.gallery, rep.known, rep.unknown, rep.rank1, rep.rank5,
            rep.at_far_1e2.dir, rep.at_far_1e3.dir, r->set.no_face.size(),
            r->set.failed.size());
    }
}

void run_eval(eval_options o) {
    if (o.faces.empty())
        o.faces = default_faces_dir();
    if (o.pairs.empty() && !o.openset) {
        return fail("eval: give --pairs FILE or --openset");
    }
    o.model.center_fallback = true;  // counted as no_face
    auto po = pipeline_options(o.model, "");
    if (!po)
        return fail(po.error());
    auto p = face_pipeline::create(*po);
    if (!p)
        return fail(p.error());
    if (o.openset) {
        run_eval_openset(o, **p);
    } else {
        run_eval_pairs(o, **p);
    }
}

void register_eval(CLI::App &app) {
    auto o = std::make_shared<eval_options>();
    CLI::App *c = app.add_subcommand(
        "eval", "Measure verification (LFW pairs) or open-set search");
    c->add_option("--faces", o->faces,
                  "Person-per-folder dataset (default $FACEVEC_FACES or "
                  "../shared/faces)");
    c->add_option("--pairs", o->pairs,
                  "LFW pairs file (pairs.txt: 10 folds; pairsDevTest.txt)");
    c->add_flag("--openset", o->openset,
                "Open-set identification on the person folders");
    c->add_flag("--json", o->json, "One JSON object");
    c->add_option("--plot", o->plot, "ROC and distance histograms (PNG)");
    add_model_options(c, &o->model, false);
    c->callback([o] { run([&] { run_eval(*o); }); });
}

// ---- calibrate ----

struct calibrate_options {
    std::string db;
    std::string pairs;
    std::string faces;
    double far = kDefaultCalibrationFar;
    model_options model;
};

void run_calibrate(calibrate_options o) {
    if (o.faces.empty())
        o.faces = default_faces_dir();
    auto eng = engine::open(o.db, engine_options{});
    if (!eng)
        return fail(eng.error());
    o.model.center_fallback = true;
    auto po = pipeline_options(o.model, (*eng)->meta().model_fingerprint);
    if (!po)
        return fail(po.error());
    auto p = face_pipeline::create(*po);
    if (!p)
        return fail(p.error());
    if ((*p)->fingerprint() != (*eng)->meta().model_fingerprint) {
        return fail(mismatch(o.db + " holds embeddings of " +
                             (*eng)->meta().model_fingerprint +
                             ", calibrating " + (*p)->fingerprint()));
    }
    std::string pairs_file = resolve_pairs_file(o.pairs, o.faces);
    embedded_set set;
    auto d = pairs_from_file(**p, o.faces, pairs_file, set);
    if (!d)
        return fail(d.error());
    std::vector<float> genuine, impostor;
    for (size_t i = 0; i < d->distance.size(); ++i) {
        (d->same[i] ? genuine : impostor).push_back(d->distance[i]);
    }
    auto pt = train::tar_at_far(genuine, impostor, o.far);
    if (!pt)
        return fail(pt.error().with_context(pairs_file));
    auto st = (*eng)->set_threshold(pt->threshold);
    if (!st.is_ok())
        return fail(st);
    std::printf(
        "threshold %.6g stored in %s: FAR %.4g (target %.4g), TAR %.4f on "
        "%zu pairs of %s%s\n",
        double(pt->threshold), o.db.c_str(), pt->far, o.far, pt->tar,
        d->distance.size(), pairs_file.c_str(),
        pt->far_resolved ? "" : " (too few impostor pairs for this FAR)");
}

void register_calibrate(CLI::App &app) {
    auto o = std::make_shared<calibrate_options>();
    CLI::App *c = app.add_subcommand(
        "calibrate",
        "Choose the decision threshold on a pairs file and store it");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--pairs", o->pairs, "LFW pairs file")->required();
    c->add_option("--far", o->far, "Target false-accept rate")
        ->check(CLI::Range(0.0, 1.0));
    c->add_option("--faces", o->faces, "Where the pairs' images are");
    add_model_options(c, &o->model, false);
    c->callback([o] { run([&] { run_calibrate(*o); }); });
}

// ---- demo ----

struct demo_options {
    std::string faces;
    std::string db;
    model_options model;
};

uint64_t folder_bytes(const std::string &dir) {
    uint64_t total = 0;
    std::error_code ec;
    for (auto &e : fs::recursive_directory_iterator(dir, ec)) {
        if (e.is_regular_file(ec))
            total += e.file_size(ec);
    }
    return total;
}

// One answered probe of the demo.
struct demo_answer {
    size_t probe;    // index in its probe list
    float distance;  // to the nearest enrolled face
    bool right;      // the nearest face is the probe's person
};

// What an entrance gets when it calibrates on its own strangers: the
// threshold that lets in kDemoStrangerRate of the even-numbered strangers,
// applied to the odd-numbered ones and to the known probes, neither of
// which chose it.
void print_gallery_calibration(const std::vector<demo_answer> &known,
                               size_t known_probes,
                               const std::vector<demo_answer> &strangers) {
    constexpr double kDemoStrangerRate = 0.01;
    std::vector<float> calibration;
    for (const demo_answer &s : strangers) {
        if (s.probe % 2 == 0)
            calibration.push_back(s.distance);
    }
    if (calibration.empty() || known_probes == 0)
        return;
    std::sort(calibration.begin(), calibration.end());
    // Accepted means distance <= threshold: just below the (n x rate)-th
    // nearest calibration stranger.
    const auto allowed =
        static_cast<size_t>(kDemoStrangerRate * calibration.size());
    const float threshold = std::nextafter(calibration[allowed], 0.0F);
    size_t held_out = 0, let_in = 0, correct = 0;
    for (const demo_answer &s : strangers) {
        if (s.probe % 2 == 1) {
            ++held_out;
            let_in += s.distance <= threshold;
        }
    }
    for (const demo_answer &k : known)
        correct += k.right && k.distance <= threshold;
    std::printf(
        "  calibrated on the gallery (threshold %.4g lets in %.0f%% of half "
        "the strangers):\n"
        "    other strangers in %zu of %zu (%.4f), known accepted as the "
        "right person %zu (%.4f)\n",
        double(threshold), kDemoStrangerRate * 100, let_in, held_out,
        held_out ? double(let_in) / held_out : 0.0, correct,
        double(correct) / known_probes);
}

// Enrolls the gallery of the open-set split into a fresh database,
// queries every probe through the engine, and reports what an entrance
// system would see at the stored threshold.
void run_demo(demo_options o) {
    if (o.faces.empty())
        o.faces = default_faces_dir();
    auto files = list_person_folders(o.faces);
    if (!files)
        return fail(files.error());
    std::map<std::string, std::vector<std::string>> by_person;
    for (auto &f : *files)
        by_person[f.person].push_back(f.path);
    auto split = train::split_open_set(by_person);
    std::printf(
        "dataset %s: %zu persons with 2+ images (gallery), %zu "
        "known probes, %zu strangers\n",
        o.faces.c_str(), split.gallery.size(), split.known.size(),
        split.unknown.size());

    std::error_code ec;
    fs::remove_all(o.db, ec);
    o.model.faces = "central";
    o.model.center_fallback = true;
    auto po = pipeline_options(o.model, "");
    if (!po)
        return fail(po.error());
    auto p = face_pipeline::create(*po);
    if (!p)
        return fail(p.error());
    auto eng = open_for(o.db, **p);
    if (!eng)
        return fail(eng.error());

    // Enroll the gallery, one atomic write per chunk.
    std::vector<std::string> gallery;
    for (auto &g : split.gallery)
        gallery.push_back(g.file);
    auto t0 = clock_type::now();
    size_t enrolled = 0;
    embed_all(**p, gallery, face_policy::central, "enroll",
              [&](size_t at, const std::vector<photo_faces> &res) {
                  std::vector<enroll_item> items;
                  for (size_t i = 0; i < res.size(); ++i) {
                      if (!res[i].error.is_ok() || res[i].faces.empty())
                          continue;
                      items.push_back({split.gallery[at + i].person,
                                       res[i].faces.front().embedding,
                                       res[i].path, res[i].content_hash});
                  }
                  auto rep = (*eng)->enroll(items);
                  if (rep)
                      enrolled += rep->enrolled.size();
              });
    double enroll_s = seconds_since(t0);

    // Query every probe; `nearest` gets each answered probe's nearest
    // distance and whether it is the right person.
    auto query_probes = [&](const std::vector<train::probe_image> &probes,
                            size_t &accepted, size_t &correct, size_t &rank1,
                            std::vector<demo_answer> &nearest) {
        std::vector<std::string> paths;
        for (auto &x : probes)
            paths.push_back(x.file);
        embed_all(**p, paths, face_policy::central, "query",
                  [&](size_t at, const std::vector<photo_faces> &res) {
                      for (size_t i = 0; i < res.size(); ++i) {
                          if (!res[i].error.is_ok() || res[i].faces.empty())
                              continue;
                          auto ans = (*eng)->query(
                              res[i].faces.front().embedding.data(), 1, 1);
                          if (!ans || ans->empty())
                              continue;
                          const auto &a = ans->front();
                          bool right =
                              !a.top.empty() &&
                              a.top.front().person == probes[at + i].person;
                          rank1 += right;
                          accepted += a.person.has_value();
                          correct += a.person.has_value() && right;
                          nearest.push_back({at + i, a.distance, right});
                      }
                  });
    };
    size_t k_acc = 0, k_correct = 0, k_rank1 = 0;
    size_t u_acc = 0, u_correct = 0, u_rank1 = 0;
    std::vector<demo_answer> known_nearest, stranger_nearest;
    t0 = clock_type::now();
    query_probes(split.known, k_acc, k_correct, k_rank1, known_nearest);
    query_probes(split.unknown, u_acc, u_correct, u_rank1, stranger_nearest);
    double query_s = seconds_since(t0);
    size_t probes = split.known.size() + split.unknown.size();

    auto stats = (*eng)->stats();
    std::printf(
        "\nfacevec demo (%s, threshold %.4g)\n"
        "  enrolled        %zu faces of %zu persons, %.1f images/s\n"
        "  rank-1          %.4f of %zu known probes\n"
        "  known accepted  %zu (%.4f), as the right person %zu (%.4f)\n"
        "  strangers in    %zu of %zu (%.4f)\n"
        "  queries         %zu photos, %.1f images/s\n"
        "  database        %s, %.1f MiB on disk\n",
        stats.model_fingerprint.c_str(), double(stats.threshold), enrolled,
        size_t(stats.persons), enroll_s > 0 ? enrolled / enroll_s : 0.0,
        split.known.empty() ? 0.0 : double(k_rank1) / split.known.size(),
        split.known.size(), k_acc,
        split.known.empty() ? 0.0 : double(k_acc) / split.known.size(),
        k_correct,
        split.known.empty() ? 0.0 : double(k_correct) / split.known.size(),
        u_acc, split.unknown.size(),
        split.unknown.empty() ? 0.0 : double(u_acc) / split.unknown.size(),
        probes, query_s > 0 ? probes / query_s : 0.0, o.db.c_str(),
        folder_bytes(o.db) / (1024.0 * 1024.0));
    print_gallery_calibration(known_nearest, split.known.size(),
                              stranger_nearest);
}

void register_demo(CLI::App &app) {
    auto o = std::make_shared<demo_options>();
    CLI::App *c = app.add_subcommand(
        "demo",
        "Enroll a person-per-folder dataset's open-set gallery and query "
        "every probe");
    c->add_option("--faces", o->faces,
                  "Dataset (default $FACEVEC_FACES or ../shared/faces)");
    c->add_option("--db", o->db, "Database to (re)create")
        ->default_val("facevec-demo.db");
    add_model_options(c, &o->model, false);
    c->callback([o] { run([&] { run_demo(*o); }); });
}

}  // namespace

void run_image_query(const std::string &db,
                     const std::vector<std::string> &inputs,
                     const std::string &model, int k,
                     std::optional<float> threshold, bool largest) {
    run([&] {
        auto eng = engine::open(db, engine_options{});
        if (!eng)
            return fail(eng.error());
        model_options m;
        m.model = model;
        auto po = pipeline_options(m, (*eng)->meta().model_fingerprint);
        if (!po)
            return fail(po.error());
        auto pipe = face_pipeline::create(*po);
        if (!pipe)
            return fail(pipe.error());
        if ((*pipe)->fingerprint() != (*eng)->meta().model_fingerprint) {
            return fail(mismatch(db + " holds embeddings of " +
                                 (*eng)->meta().model_fingerprint +
                                 ", the query model is " +
                                 (*pipe)->fingerprint()));
        }

        auto paths = expand_inputs(inputs);
        size_t failed = 0, qi = 0;
        face_policy policy = largest ? face_policy::largest : face_policy::all;
        embed_all(
            **pipe, paths, policy, "query",
            [&](size_t, const std::vector<photo_faces> &res) {
                for (const auto &r : res) {
                    if (!r.error.is_ok()) {
                        std::fprintf(stderr, "facevec: query: %s\n",
                                     r.error.message().c_str());
                        ++failed;
                        continue;
                    }
                    for (const auto &f : r.faces) {
                        auto ans =
                            (*eng)->query(f.embedding.data(), 1, k, threshold);
                        if (!ans) {
                            std::fprintf(stderr, "facevec: query: %s: %s\n",
                                         r.path.c_str(),
                                         ans.error().message().c_str());
                            ++failed;
                            continue;
                        }
                        ojson j;
                        j["input"] = r.path;
                        if (r.fallback)
                            j["fallback"] = "center crop";
                        j["box"] = {api::json_number(float(f.box.left)),
                                    api::json_number(float(f.box.top)),
                                    api::json_number(float(f.box.right)),
                                    api::json_number(float(f.box.bottom))};
                        ojson answer = api::to_json(ans->front(), qi++);
                        for (auto &[key, v] : answer.items())
                            j[key] = v;
                        std::printf("%s\n", j.dump().c_str());
                    }
                }
                std::fflush(stdout);
            });
        if (failed > 0)
            set_exit_code(kExitSomeFailed);
    });
}

void register_face_commands(CLI::App &app) {
    register_enroll(app);
    register_eval(app);
    register_calibrate(app);
    register_demo(app);
}

}  // namespace facevec::cli
