// facevec embed: images to embedding vectors; facevec import-weights:
// pretrained weights to facevec weights files.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/import_faceapi.h"
#include "embed/import_keras.h"
#include "embed/models.h"
#include "embed/weights.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/vector_io.h"

namespace facevec::cli {
namespace {

constexpr int kDefaultBatch = 16;

struct embed_args {
    std::string model = embed::kFaceResnet;
    std::string align = "none";
    std::string precision = "f32";
    std::string out;
    int input_size = 0;
    int batch = kDefaultBatch;
    std::vector<std::string> images;
};

// Writes the embeddings of `paths` (rows of `vectors`) as JSON lines or
// appends them to the .npy writer.
status emit(const std::vector<std::string> &paths,
            const std::vector<float> &vectors, int dim, npy_writer *npy) {
    for (size_t i = 0; i < paths.size(); ++i) {
        const float *row = vectors.data() + i * dim;
        if (npy != nullptr) {
            FACEVEC_RETURN_IF_ERROR(npy->write_row(row));
            continue;
        }
        nlohmann::ordered_json line = {
            {"input", paths[i]},
            {"embedding", std::vector<float>(row, row + dim)}};
        std::printf("%s\n", line.dump().c_str());
    }
    return status::ok();
}

void run_embed(const embed_args &a) {
    auto prec = embed::parse_precision(a.precision);
    if (!prec)
        return fail(prec.error());
    embed::embedder_options opts;
    opts.prec = *prec;
    opts.align = a.align;
    opts.input_size = a.input_size;
    auto e = embed::embedder::load(a.model, opts);
    if (!e)
        return fail(e.error());
    for (const std::string &note : (*e)->notes()) {
        std::fprintf(stderr, "facevec: note: %s\n", note.c_str());
    }

    std::unique_ptr<npy_writer> npy;
    if (!a.out.empty()) {
        auto w = npy_writer::create(a.out, (*e)->dim());
        if (!w)
            return fail(w.error());
        npy = std::move(w).value();
    }

    // Decode and prepare on this thread, run the network per batch. An
    // image that fails is reported and skipped.
    embed::decode_options dopts;
    dopts.min_side = embed::decode_min_side((*e)->preprocessing());
    std::vector<float> batch;
    std::vector<std::string> paths;
    bool failed = false;
    auto flush = [&]() -> status {
        if (paths.empty())
            return status::ok();
        auto out = (*e)->embed_tensors(batch);
        if (!out)
            return out.error();
        FACEVEC_RETURN_IF_ERROR(emit(paths, *out, (*e)->dim(), npy.get()));
        batch.clear();
        paths.clear();
        return status::ok();
    };
    for (const std::string &path : a.images) {
        auto img = embed::decode_file(path, dopts);
        auto t = img ? (*e)->prepare(*img, path)
                     : result<std::vector<float>>(img.error());
        if (!t) {
            fail(t.error());
            failed = true;
            continue;
        }
        batch.insert(batch.end(), t->begin(), t->end());
        paths.push_back(path);
        if (static_cast<int>(paths.size()) >= a.batch) {
            status st = flush();
            if (!st)
                return fail(st);
        }
    }
    status st = flush();
    if (!st)
        return fail(st);
    if (npy) {
        st = npy->finish();
        if (!st)
            return fail(st);
    }
    if (failed)
        set_exit_code(1);
}

struct import_args {
    std::string format;
    std::string source;
    std::string head;
    std::string out;
    bool skip_checksum = false;
    embed::vgg16_params vgg;
};

void run_import(const import_args &a) {
    embed::weights_file w;
    if (a.format == "face-api") {
        auto r = embed::import_faceapi(
            a.source, a.skip_checksum ? "" : embed::kFaceApiModelSha256);
        if (!r)
            return fail(r.error());
        w = std::move(r).value();
    } else {
        auto conv = embed::import_keras_vgg16(a.source);
        if (!conv)
            return fail(conv.error());
        w.architecture = embed::kVgg16;
        w.params = a.vgg.to_json();
        if (!a.head.empty()) {
            // The head file supplies the head/* tensors and parameters.
            auto head = embed::read_weights(a.head);
            if (!head)
                return fail(head.error());
            w.params = head->params;
            for (auto &[name, t] : head->tensors) {
                if (name.starts_with("head/"))
                    w.tensors[name] = t;
            }
        }
        w.tensors.merge(*conv);
    }
    status st = embed::write_weights(a.out, w);
    if (!st)
        return fail(st);
    std::fprintf(stderr, "facevec: wrote %s (%s, %zu tensors)\n", a.out.c_str(),
                 w.architecture.c_str(), w.tensors.size());
}

}  // namespace

void register_embed_commands(CLI::App &app) {
    auto a = std::make_shared<embed_args>();
    CLI::App *embed = app.add_subcommand(
        "embed", "Embed images: one JSON line per image, or a .npy file");
    embed
        ->add_option("--model", a->model,
                     "face-resnet, vgg16 or a facevec weights file")
        ->capture_default_str();
    embed
        ->add_option("--align", a->align,
                     "none: the image as is (resized to the input); "
                     "center: centre square of 0.48 of the shorter side")
        ->check(CLI::IsMember({"none", "center"}))
        ->capture_default_str();
    embed->add_option("--precision", a->precision, "f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    embed->add_option("--out", a->out, "write an n x dim float32 .npy");
    embed->add_option("--input-size", a->input_size,
                      "vgg16 only: input side in pixels (default 224)");
    embed->add_option("--batch", a->batch, "images per network run")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    embed->add_option("images", a->images, "image files")->required();
    embed->callback([a] { run_embed(*a); });

    auto b = std::make_shared<import_args>();
    CLI::App *imp = app.add_subcommand(
        "import-weights", "Convert pretrained weights to a facevec file");
    imp->add_option("format", b->format, "face-api or keras-vgg16")
        ->check(CLI::IsMember({"face-api", "keras-vgg16"}))
        ->required();
    imp->add_option("source", b->source,
                    "face-api: the weights manifest (the .bin beside it); "
                    "keras-vgg16: the Keras .h5 file")
        ->required();
    imp->add_option("--out", b->out, "facevec weights file to write")
        ->required();
    imp->add_option("--head", b->head,
                    "keras-vgg16: facevec weights file with the trained "
                    "head (head/* tensors and parameters)");
    imp->add_flag("--skip-checksum", b->skip_checksum,
                  "face-api: accept a model file with another SHA-256");
    imp->add_option("--input-size", b->vgg.input_size, "keras-vgg16")
        ->capture_default_str();
    imp->add_option("--dim", b->vgg.dim, "keras-vgg16: embedding size")
        ->capture_default_str();
    imp->add_option("--hidden", b->vgg.hidden,
                    "keras-vgg16: head hidden width, 0 for one layer")
        ->capture_default_str();
    imp->callback([b] { run_import(*b); });
}

}  // namespace facevec::cli
