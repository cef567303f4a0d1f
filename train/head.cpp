#include "train/head.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "train/rng.h"

namespace facevec::train {
namespace {

constexpr char kMagic[] = "FVHEAD1\n";
constexpr size_t kMagicSize = sizeof(kMagic) - 1;
constexpr size_t kLengthBytes = 8;
constexpr float kMinNorm = 1e-12f;
constexpr double kHeUniformScale = 6.0;
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
constexpr int kByteBits = 8;
// Cap on the JSON description, against a corrupt length field.
constexpr uint64_t kMaxJsonBytes = 1 << 20;

const char *const kNames[] = {"fc1.weight", "fc1.bias", "fc2.weight",
                              "fc2.bias"};
constexpr size_t kWeight1 = 0;
constexpr size_t kBias1 = 1;
constexpr size_t kWeight2 = 2;
constexpr size_t kBias2 = 3;

named_tensor make_tensor(const char *name, std::vector<int64_t> shape) {
    size_t n = 1;
    for (int64_t s : shape)
        n *= static_cast<size_t>(s);
    return named_tensor{name, std::move(shape), std::vector<float>(n, 0.0f)};
}

void fill_he_uniform(named_tensor *w, size_t fan_in, rng *r) {
    const double limit =
        std::sqrt(kHeUniformScale / static_cast<double>(fan_in));
    for (float &v : w->data) {
        v = static_cast<float>((2 * r->uniform() - 1) * limit);
    }
}

// out (n x m) = x (n x k) * w^T (w: m x k) + bias (m).
void linear(const float *x, size_t n, size_t k, const named_tensor &w,
            const named_tensor &bias, float *out) {
    const size_t m = bias.data.size();
    for (size_t i = 0; i < n; ++i) {
        std::memcpy(out + i * m, bias.data.data(), m * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                static_cast<int>(m), static_cast<int>(k), 1.0f, x,
                static_cast<int>(k), w.data.data(), static_cast<int>(k), 1.0f,
                out, static_cast<int>(m));
}

// Gradients of a linear layer: dw (m x k) = dz^T x, db = column sums of
// dz, and dx (n x k) = dz w when dx is not null.
void linear_backward(const float *x, const float *dz, size_t n, size_t k,
                     size_t m, const named_tensor &w, float *dw, float *db,
                     float *dx) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(m),
                static_cast<int>(k), static_cast<int>(n), 1.0f, dz,
                static_cast<int>(m), x, static_cast<int>(k), 0.0f, dw,
                static_cast<int>(k));
    std::fill(db, db + m, 0.0f);
    for (size_t i = 0; i < n; ++i) {
        for (size_t j = 0; j < m; ++j)
            db[j] += dz[i * m + j];
    }
    if (dx != nullptr) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                    static_cast<int>(n), static_cast<int>(k),
                    static_cast<int>(m), 1.0f, dz, static_cast<int>(m),
                    w.data.data(), static_cast<int>(k), 0.0f, dx,
                    static_cast<int>(k));
    }
}

uint64_t fnv1a(const void *data, size_t bytes, uint64_t h = kFnvOffset) {
    const auto *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < bytes; ++i) {
        h = (h ^ p[i]) * kFnvPrime;
    }
    return h;
}

const named_tensor *find(const std::vector<named_tensor> &ts,
                         const std::string &name) {
    for (const named_tensor &t : ts) {
        if (t.name == name)
            return &t;
    }
    return nullptr;
}

status check_tensor(const named_tensor *t, const char *name,
                    std::vector<int64_t> shape) {
    if (t == nullptr) {
        return invalid_argument(std::string("head: tensor ") + name +
                                " is missing");
    }
    if (t->shape != shape) {
        return invalid_argument(std::string("head: tensor ") + name +
                                " has a shape that disagrees with the "
                                "other layers");
    }
    size_t n = 1;
    for (int64_t s : shape)
        n *= static_cast<size_t>(s);
    if (t->data.size() != n) {
        return invalid_argument(std::string("head: tensor ") + name +
                                " holds " + std::to_string(t->data.size()) +
                                " floats, its shape needs " +
                                std::to_string(n));
    }
    for (float v : t->data) {
        if (!std::isfinite(v)) {
            return invalid_argument(std::string("head: tensor ") + name +
                                    " has a NaN or Inf weight");
        }
    }
    return status::ok();
}

}  // namespace

const char *head_init_name(head_init i) {
    return i == head_init::random ? "random" : "identity";
}

result<head_init> parse_head_init(const std::string &name) {
    if (name == "random")
        return head_init::random;
    if (name == "identity")
        return head_init::identity;
    return invalid_argument("head init '" + name +
                            "' is unknown; use random or identity");
}

result<embedding_head> embedding_head::create(const head_config &config,
                                              uint64_t seed) {
    if (config.input_dim == 0 || config.output_dim == 0) {
        return invalid_argument(
            "head: input and output dims must be > 0, "
            "got " +
            std::to_string(config.input_dim) + " and " +
            std::to_string(config.output_dim));
    }
    if (config.init == head_init::identity && config.hidden_dim > 0) {
        return invalid_argument(
            "head: identity init needs a single layer (hidden dim 0), got "
            "hidden dim " +
            std::to_string(config.hidden_dim));
    }
    embedding_head h;
    h.config_ = config;
    rng r(seed);
    const auto in = static_cast<int64_t>(config.input_dim);
    const auto out = static_cast<int64_t>(config.output_dim);
    const auto hid = static_cast<int64_t>(config.hidden_dim);
    const int64_t out1 = h.two_layers() ? hid : out;

    h.params_.push_back(make_tensor(kNames[kWeight1], {out1, in}));
    h.params_.push_back(make_tensor(kNames[kBias1], {out1}));
    if (config.init == head_init::identity) {
        named_tensor &w = h.params_[kWeight1];
        for (int64_t i = 0; i < std::min(in, out); ++i)
            w.data[i * in + i] = 1.0f;
    } else {
        fill_he_uniform(&h.params_[kWeight1], config.input_dim, &r);
    }
    if (h.two_layers()) {
        h.params_.push_back(make_tensor(kNames[kWeight2], {out, hid}));
        h.params_.push_back(make_tensor(kNames[kBias2], {out}));
        fill_he_uniform(&h.params_[kWeight2], config.hidden_dim, &r);
    }
    return h;
}

result<embedding_head> embedding_head::from_tensors(
    const std::vector<named_tensor> &tensors, bool relu) {
    const named_tensor *w1 = find(tensors, kNames[kWeight1]);
    if (w1 == nullptr || w1->shape.size() != 2 || w1->shape[0] <= 0 ||
        w1->shape[1] <= 0) {
        return invalid_argument(
            "head: tensor fc1.weight is missing or not "
            "a non-empty matrix");
    }
    const named_tensor *w2 = find(tensors, kNames[kWeight2]);
    head_config c;
    c.relu = relu;
    c.input_dim = static_cast<size_t>(w1->shape[1]);
    const int64_t out1 = w1->shape[0];
    FACEVEC_RETURN_IF_ERROR(
        check_tensor(w1, kNames[kWeight1], {out1, w1->shape[1]}));
    FACEVEC_RETURN_IF_ERROR(
        check_tensor(find(tensors, kNames[kBias1]), kNames[kBias1], {out1}));
    embedding_head h;
    h.params_ = {*w1, *find(tensors, kNames[kBias1])};
    if (w2 == nullptr) {
        c.output_dim = static_cast<size_t>(out1);
    } else {
        if (w2->shape.size() != 2 || w2->shape[0] <= 0) {
            return invalid_argument(
                "head: tensor fc2.weight is not a "
                "non-empty matrix");
        }
        const int64_t out = w2->shape[0];
        c.hidden_dim = static_cast<size_t>(out1);
        c.output_dim = static_cast<size_t>(out);
        FACEVEC_RETURN_IF_ERROR(
            check_tensor(w2, kNames[kWeight2], {out, out1}));
        FACEVEC_RETURN_IF_ERROR(
            check_tensor(find(tensors, kNames[kBias2]), kNames[kBias2], {out}));
        h.params_.push_back(*w2);
        h.params_.push_back(*find(tensors, kNames[kBias2]));
    }
    h.config_ = c;
    return h;
}

size_t embedding_head::parameter_count() const {
    size_t n = 0;
    for (const named_tensor &t : params_)
        n += t.data.size();
    return n;
}

bool embedding_head::all_finite() const {
    for (const named_tensor &t : params_) {
        for (float v : t.data) {
            if (!std::isfinite(v))
                return false;
        }
    }
    return true;
}

void embedding_head::forward(const float *x, size_t n,
                             head_activations *a) const {
    const size_t out = config_.output_dim;
    const size_t out1 = params_[kBias1].data.size();
    a->n = n;
    a->x = x;
    a->z1.resize(n * out1);
    linear(x, n, config_.input_dim, params_[kWeight1], params_[kBias1],
           a->z1.data());

    // Second layer: ReLU (optional) then fc2; one layer: z is fc1's output.
    if (two_layers()) {
        a->a1 = a->z1;
        if (config_.relu) {
            for (float &v : a->a1)
                v = std::max(v, 0.0f);
        }
        a->z.resize(n * out);
        linear(a->a1.data(), n, config_.hidden_dim, params_[kWeight2],
               params_[kBias2], a->z.data());
    } else {
        a->z = a->z1;
    }

    // L2 normalisation of every row.
    a->norm.resize(n);
    a->y.resize(n * out);
    for (size_t i = 0; i < n; ++i) {
        const float *z = a->z.data() + i * out;
        float s = 0;
        for (size_t j = 0; j < out; ++j)
            s += z[j] * z[j];
        a->norm[i] = std::max(std::sqrt(s), kMinNorm);
        for (size_t j = 0; j < out; ++j) {
            a->y[i * out + j] = z[j] / a->norm[i];
        }
    }
}

void embedding_head::embed(const float *x, size_t n, float *out) const {
    head_activations a;
    forward(x, n, &a);
    std::memcpy(out, a.y.data(), a.y.size() * sizeof(float));
}

void embedding_head::forward_train(const float *x, size_t n,
                                   head_activations *acts) const {
    forward(x, n, acts);
}

void embedding_head::backward(const head_activations &a, const float *grad_y,
                              std::vector<std::vector<float>> *grads) const {
    const size_t n = a.n;
    const size_t out = config_.output_dim;
    grads->resize(params_.size());
    for (size_t t = 0; t < params_.size(); ++t) {
        (*grads)[t].resize(params_[t].data.size());
    }

    // Through the normalisation: dz = (g - y (y . g)) / |z|.
    std::vector<float> dz(n * out);
    for (size_t i = 0; i < n; ++i) {
        const float *y = a.y.data() + i * out;
        const float *g = grad_y + i * out;
        float dot = 0;
        for (size_t j = 0; j < out; ++j)
            dot += y[j] * g[j];
        for (size_t j = 0; j < out; ++j) {
            dz[i * out + j] = (g[j] - y[j] * dot) / a.norm[i];
        }
    }

    if (!two_layers()) {
        linear_backward(a.x, dz.data(), n, config_.input_dim, out,
                        params_[kWeight1], (*grads)[kWeight1].data(),
                        (*grads)[kBias1].data(), nullptr);
        return;
    }

    // fc2, then ReLU, then fc1.
    const size_t hid = config_.hidden_dim;
    std::vector<float> da1(n * hid);
    linear_backward(a.a1.data(), dz.data(), n, hid, out, params_[kWeight2],
                    (*grads)[kWeight2].data(), (*grads)[kBias2].data(),
                    da1.data());
    if (config_.relu) {
        for (size_t i = 0; i < da1.size(); ++i) {
            if (a.z1[i] <= 0)
                da1[i] = 0;
        }
    }
    linear_backward(a.x, da1.data(), n, config_.input_dim, hid,
                    params_[kWeight1], (*grads)[kWeight1].data(),
                    (*grads)[kBias1].data(), nullptr);
}

status save_head(const std::string &path, const embedding_head &head,
                 const nlohmann::json &metadata) {
    if (!head.all_finite()) {
        return invalid_argument(path +
                                ": refusing to write a head with NaN or "
                                "Inf weights");
    }

    // Describe the tensors and checksum their bytes.
    nlohmann::json desc;
    const head_config &c = head.config();
    desc["config"] = {{"input_dim", c.input_dim},
                      {"hidden_dim", c.hidden_dim},
                      {"output_dim", c.output_dim},
                      {"relu", c.relu},
                      {"normalize", "l2"}};
    uint64_t offset = 0;
    uint64_t sum = kFnvOffset;
    for (const named_tensor &t : head.tensors()) {
        const size_t bytes = t.data.size() * sizeof(float);
        desc["tensors"].push_back(
            {{"name", t.name}, {"shape", t.shape}, {"offset", offset}});
        sum = fnv1a(t.data.data(), bytes, sum);
        offset += bytes;
    }
    desc["data_bytes"] = offset;
    desc["fnv1a64"] = sum;
    desc["metadata"] = metadata;
    const std::string text = desc.dump();

    // Write beside the target, then rename over it.
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out)
            return io_error(tmp + ": cannot open for writing");
        out.write(kMagic, kMagicSize);
        unsigned char len[kLengthBytes];
        for (size_t i = 0; i < kLengthBytes; ++i) {
            len[i] = static_cast<unsigned char>(text.size() >> (kByteBits * i));
        }
        out.write(reinterpret_cast<const char *>(len), kLengthBytes);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const named_tensor &t : head.tensors()) {
            out.write(
                reinterpret_cast<const char *>(t.data.data()),
                static_cast<std::streamsize>(t.data.size() * sizeof(float)));
        }
        if (!out.flush())
            return io_error(tmp + ": write failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec)
        return io_error(path + ": rename failed: " + ec.message());
    return status::ok();
}

result<loaded_head> load_head(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return not_found(path + ": cannot open the head file");

    char magic[kMagicSize];
    unsigned char len[kLengthBytes];
    if (!in.read(magic, kMagicSize) ||
        std::memcmp(magic, kMagic, kMagicSize) != 0) {
        return corruption(path + ": not a facevec head file (bad magic)");
    }
    if (!in.read(reinterpret_cast<char *>(len), kLengthBytes)) {
        return corruption(path + ": truncated header");
    }
    uint64_t n = 0;
    for (size_t i = 0; i < kLengthBytes; ++i) {
        n |= static_cast<uint64_t>(len[i]) << (kByteBits * i);
    }
    if (n > kMaxJsonBytes) {
        return corruption(path + ": description length " + std::to_string(n) +
                          " is implausible");
    }
    std::string text(n, '\0');
    if (!in.read(text.data(), static_cast<std::streamsize>(n))) {
        return corruption(path + ": truncated description");
    }
    nlohmann::json desc = nlohmann::json::parse(text, nullptr, false);
    if (desc.is_discarded() || !desc.contains("tensors") ||
        !desc.contains("config")) {
        return corruption(path + ": the description is not valid JSON");
    }

    // Tensors in file order; then the checksum over all of them.
    std::vector<named_tensor> tensors;
    uint64_t sum = kFnvOffset;
    try {
        for (const auto &td : desc["tensors"]) {
            named_tensor t;
            t.name = td.at("name").get<std::string>();
            t.shape = td.at("shape").get<std::vector<int64_t>>();
            size_t count = 1;
            for (int64_t s : t.shape) {
                if (s <= 0)
                    return corruption(path + ": bad shape");
                count *= static_cast<size_t>(s);
            }
            t.data.resize(count);
            const auto bytes =
                static_cast<std::streamsize>(count * sizeof(float));
            if (!in.read(reinterpret_cast<char *>(t.data.data()), bytes)) {
                return corruption(path + ": truncated tensor " + t.name);
            }
            sum = fnv1a(t.data.data(), static_cast<size_t>(bytes), sum);
            tensors.push_back(std::move(t));
        }
        if (sum != desc.at("fnv1a64").get<uint64_t>()) {
            return corruption(path + ": checksum mismatch");
        }
    } catch (const nlohmann::json::exception &e) {
        return corruption(path + ": bad description: " + e.what());
    }

    const bool relu = desc["config"].value("relu", true);
    result<embedding_head> h = embedding_head::from_tensors(tensors, relu);
    if (!h)
        return h.error().with_context(path);
    return loaded_head{std::move(h.value()),
                       desc.value("metadata", nlohmann::json::object())};
}

}  // namespace facevec::train
