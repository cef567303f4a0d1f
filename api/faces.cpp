#include "api/faces.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <thread>

#include "common/threading.h"
#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/preprocess.h"
#include "embed/weights.h"

namespace facevec {
namespace {

// The squared-L2 threshold a new face-resnet database starts with; see
// the README (Embedders) for how it was chosen.
constexpr float kFaceResnetThreshold = 0.30F;

// Why a photo skipped after bytes_options::cancelled fired failed.
constexpr const char *kCancelled = "not processed: cancelled";

result<std::vector<uint8_t>> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return io_error(path + ": cannot open file");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    if (in.bad())
        return io_error(path + ": read failed");
    return bytes;
}

embed::face_choice choice_for(face_policy policy) {
    switch (policy) {
        case face_policy::largest:
            return embed::face_choice::largest;
        case face_policy::central:
            return embed::face_choice::central;
        case face_policy::exactly_one:
        case face_policy::all:
            return embed::face_choice::all;
    }
    return embed::face_choice::all;
}

// The image flipped left to right.
embed::image mirrored(const embed::image &img) {
    embed::image out = img;
    const size_t row = static_cast<size_t>(img.width) * 3;
    for (int y = 0; y < img.height; ++y) {
        const uint8_t *src = img.rgb.data() + y * row;
        uint8_t *dst = out.rgb.data() + y * row;
        for (int x = 0; x < img.width; ++x) {
            std::copy_n(src + 3 * x, 3, dst + 3 * (img.width - 1 - x));
        }
    }
    return out;
}

// Runs fn(i) for i in [0, n) on up to `threads` threads.
template <typename Fn>
void parallel_for(size_t n, int threads, const Fn &fn) {
    size_t workers = std::min<size_t>(n, std::max(threads, 1));
    if (workers <= 1) {
        for (size_t i = 0; i < n; ++i)
            fn(i);
        return;
    }
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i = next++; i < n; i = next++)
            fn(i);
    };
    std::vector<std::thread> pool;
    for (size_t w = 1; w < workers; ++w)
        pool.emplace_back(work);
    work();
    for (auto &t : pool)
        t.join();
}

}  // namespace

result<face_policy> parse_face_policy(const std::string &name) {
    if (name == "one")
        return face_policy::exactly_one;
    if (name == "largest")
        return face_policy::largest;
    if (name == "central")
        return face_policy::central;
    if (name == "all")
        return face_policy::all;
    return invalid_argument("unknown face policy '" + name +
                            "' (expected one, largest, central or all)");
}

struct face_pipeline::impl {
    face_pipeline_options opts;
    std::unique_ptr<embed::embedder> net;
    std::unique_ptr<embed::aligner> align;
    std::string fingerprint;  // the embedder's, "-mirror" appended

    // Reads, decodes and aligns one file into `out`, leaving the chips
    // in `chips` (one per face in out.faces, embeddings still empty).
    void prepare(const std::string &path, face_policy policy, photo_faces &out,
                 std::vector<std::vector<float>> &chips) const;
    // As prepare(), for a photo's bytes; `max_pixels` as in
    // bytes_options.
    void prepare_bytes(const std::string &name, std::span<const uint8_t> bytes,
                       face_policy policy, uint64_t max_pixels,
                       photo_faces &out,
                       std::vector<std::vector<float>> &chips) const;
    // Embeds every photo's chips, batch by batch, in photo order, into
    // out[i].faces; `cancelled` (may be empty) is asked before each
    // batch. A photo that failed keeps no partial faces.
    void embed_chips(std::vector<photo_faces> &out,
                     std::vector<std::vector<std::vector<float>>> &chips,
                     const std::function<bool()> &cancelled) const;
};

void face_pipeline::impl::prepare(
    const std::string &path, face_policy policy, photo_faces &out,
    std::vector<std::vector<float>> &chips) const {
    out.path = path;
    auto bytes = read_file(path);
    if (!bytes) {
        out.error = bytes.error();
        return;
    }
    prepare_bytes(path, *bytes, policy, 0, out, chips);
}

void face_pipeline::impl::prepare_bytes(
    const std::string &path, std::span<const uint8_t> bytes, face_policy policy,
    uint64_t max_pixels, photo_faces &out,
    std::vector<std::vector<float>> &chips) const {
    out.path = path;
    out.content_hash = embed::sha256_hex(bytes.data(), bytes.size());
    // The decoder refuses an image over the cap from its header.
    embed::decode_options dopts;
    dopts.max_pixels = max_pixels;
    auto img = embed::decode_bytes(bytes, path, dopts);
    if (!img) {
        out.error = img.error();
        return;
    }

    embed::align_options ao;
    ao.mode = opts.align;
    ao.choice = choice_for(policy);
    ao.center_fallback = opts.center_fallback;
    ao.spec = net->architecture() == "vgg16" ? embed::align_spec::vgg16()
                                             : embed::align_spec::face_resnet();
    auto aligned = align->align(*img, path, ao);
    if (!aligned) {
        out.error = aligned.error();
        return;
    }
    out.faces_found = aligned->faces_found;
    out.fallback = aligned->fallback;
    // Modes none and center detect nothing: their one chip is the face.
    if (opts.align == embed::align_mode::detect &&
        policy == face_policy::exactly_one && !aligned->fallback &&
        aligned->faces_found != 1) {
        out.error = invalid_argument(path + ": " +
                                     std::to_string(aligned->faces_found) +
                                     " faces found, expected exactly one");
        return;
    }

    // Each chip (and with opts.mirror its mirror image right after it)
    // becomes the network's input.
    for (auto &face : aligned->faces) {
        auto input = embed::preprocess(face.chip, net->preprocessing());
        if (!input) {
            out.error = input.error().with_context(path);
            out.faces.clear();
            chips.clear();
            return;
        }
        out.faces.push_back({face.box, {}});
        chips.push_back(std::move(*input));
        if (opts.mirror) {
            auto flipped =
                embed::preprocess(mirrored(face.chip), net->preprocessing());
            if (!flipped) {
                out.error = flipped.error().with_context(path);
                out.faces.clear();
                chips.clear();
                return;
            }
            chips.push_back(std::move(*flipped));
        }
    }
}

face_pipeline::face_pipeline(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
face_pipeline::~face_pipeline() = default;

result<std::unique_ptr<face_pipeline>> face_pipeline::create(
    const face_pipeline_options &opts) {
    if (opts.batch < 1) {
        return invalid_argument("batch must be >= 1, got " +
                                std::to_string(opts.batch));
    }
    auto p = std::make_unique<impl>();
    p->opts = opts;

    auto al = embed::aligner::create();
    if (!al)
        return al.error();
    p->align = std::make_unique<embed::aligner>(std::move(*al));

    // The embedder sees chips already cut to its input size; naming the
    // alignment in its options puts it into the fingerprint.
    embed::embedder_options eo;
    eo.prec = opts.prec;
    eo.align = embed::align_mode_name(opts.align);
    eo.max_batch = opts.batch;
    const embed::aligner *aligner = p->align.get();
    embed::align_mode mode = opts.align;
    eo.stage = [aligner, mode](
                   const embed::image &photo,
                   const std::string &name) -> result<embed::image> {
        embed::align_options ao;
        ao.mode = mode;
        auto a = aligner->align(photo, name, ao);
        if (!a)
            return a.error();
        return std::move(a->faces.front().chip);
    };
    auto net = embed::embedder::load(opts.model, eo);
    if (!net)
        return net.error();
    p->net = std::move(*net);
    p->fingerprint = p->net->fingerprint() + (opts.mirror ? "-mirror" : "");

    return std::unique_ptr<face_pipeline>(new face_pipeline(std::move(p)));
}

std::vector<photo_faces> face_pipeline::process(
    std::span<const std::string> paths, face_policy policy) const {
    std::vector<photo_faces> out(paths.size());
    std::vector<std::vector<std::vector<float>>> chips(paths.size());

    // Decode and align in parallel: dlib's detector is single-threaded.
    parallel_for(paths.size(), compute_threads(), [&](size_t i) {
        impl_->prepare(paths[i], policy, out[i], chips[i]);
    });
    impl_->embed_chips(out, chips, {});
    return out;
}

std::vector<photo_faces> face_pipeline::process_bytes(
    std::span<const photo_bytes> photos, face_policy policy,
    const bytes_options &opts) const {
    std::vector<photo_faces> out(photos.size());
    std::vector<std::vector<std::vector<float>>> chips(photos.size());

    auto one = [&](size_t i) {
        const photo_bytes &p = photos[i];
        if (opts.cancelled && opts.cancelled()) {
            out[i].path = p.name;
            out[i].error = status(error_code::resource_exhausted,
                                  p.name + ": " + kCancelled);
            return;
        }
        impl_->prepare_bytes(p.name, p.bytes, policy, opts.max_pixels, out[i],
                             chips[i]);
    };
    if (opts.runner) {
        opts.runner(photos.size(), one);
    } else {
        parallel_for(photos.size(), compute_threads(), one);
    }
    impl_->embed_chips(out, chips, opts.cancelled);
    return out;
}

void face_pipeline::impl::embed_chips(
    std::vector<photo_faces> &out,
    std::vector<std::vector<std::vector<float>>> &chips,
    const std::function<bool()> &cancelled) const {
    const size_t dim = net->dim();
    std::vector<std::pair<size_t, size_t>> owners;  // (photo, face)
    std::vector<float> batch;
    auto flush = [&] {
        if (owners.empty())
            return;
        result<std::vector<float>> emb =
            cancelled && cancelled()
                ? result<std::vector<float>>(
                      status(error_code::resource_exhausted, kCancelled))
                : net->embed_tensors(batch);
        for (size_t j = 0; j < owners.size(); ++j) {
            auto [photo, face] = owners[j];
            if (!emb) {
                out[photo].error = emb.error().with_context(out[photo].path);
                continue;
            }
            auto &e = out[photo].faces[face].embedding;
            auto row = emb->begin() + j * dim;
            if (e.empty()) {
                e.assign(row, row + dim);
            } else {
                // The mirror image's embedding: average the two.
                for (size_t c = 0; c < dim; ++c) {
                    e[c] = 0.5F * (e[c] + row[c]);
                }
            }
        }
        owners.clear();
        batch.clear();
    };
    const size_t per_face = opts.mirror ? 2 : 1;
    for (size_t i = 0; i < out.size(); ++i) {
        for (size_t f = 0; f < chips[i].size(); ++f) {
            owners.emplace_back(i, f / per_face);
            batch.insert(batch.end(), chips[i][f].begin(), chips[i][f].end());
            if (owners.size() == static_cast<size_t>(opts.batch)) {
                flush();
            }
        }
        std::vector<std::vector<float>>().swap(chips[i]);
    }
    flush();

    // A failed photo keeps no partial faces.
    for (auto &p : out) {
        if (!p.error.is_ok())
            p.faces.clear();
    }
}

result<std::string> face_pipeline::hash_file(const std::string &path) {
    auto bytes = read_file(path);
    if (!bytes)
        return bytes.error();
    return embed::sha256_hex(bytes->data(), bytes->size());
}

float face_pipeline::default_threshold() const {
    // A face-resnet with a trained head (normalised output) is another
    // model: its threshold is unknown here.
    return impl_->net->architecture() == "face-resnet" &&
                   !impl_->net->normalized()
               ? kFaceResnetThreshold
               : 0.0F;
}

int face_pipeline::dim() const {
    return impl_->net->dim();
}
bool face_pipeline::normalized() const {
    return impl_->net->normalized();
}

result<face_pipeline_options> options_for_fingerprint(std::string fp) {
    face_pipeline_options o;
    const std::string mirror = "-mirror";
    if (fp.ends_with(mirror)) {
        o.mirror = true;
        fp.resize(fp.size() - mirror.size());
    }
    // The last three dash-separated fields; the architecture is the rest.
    constexpr int kTailFields = 3;
    size_t cut = fp.size();
    std::vector<std::string> tail;
    for (int i = 0; i < kTailFields; ++i) {
        size_t dash = cut == 0 ? std::string::npos : fp.rfind('-', cut - 1);
        if (dash == std::string::npos || dash == 0) {
            return invalid_argument("model fingerprint \"" + fp +
                                    "\" is not <arch>-<precision>-<align>-"
                                    "<hash>");
        }
        tail.push_back(fp.substr(dash + 1, cut - dash - 1));
        cut = dash;
    }
    o.model = fp.substr(0, cut);
    // tail holds the hash, the alignment and the precision, in that order.
    o.prec = tail[2] == "bf16" ? embed::precision::bf16 : embed::precision::f32;
    auto mode = embed::parse_align_mode(tail[1]);
    if (!mode)
        return mode.error();
    o.align = *mode;
    return o;
}

const std::string &face_pipeline::fingerprint() const {
    return impl_->fingerprint;
}

}  // namespace facevec
