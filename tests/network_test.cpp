// The oneDNN executor against naive references written here in plain
// loops (double accumulation, NCHW), layer by layer on odd shapes and as
// a whole VGG16; weights files, importers and the compute thread policy.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/threading.h"
#include "embed/embedder.h"
#include "embed/import_faceapi.h"
#include "embed/import_keras.h"
#include "embed/models.h"
#include "embed/network.h"
#include "embed/weights.h"
#include "tests/test_util.h"

namespace facevec::embed {
namespace {

// Largest |executor - reference| accepted in f32, relative to the
// reference's largest magnitude.
constexpr double kF32RelativeTolerance = 1e-5;
// Least cosine between bf16 and f32 outputs of a whole network.
constexpr double kBf16MinCosine = 0.98;
constexpr uint32_t kSeed = 20261204;

const auto *const kOneThread = ::testing::AddGlobalTestEnvironment(
    new facevec::testing::one_compute_thread_environment);

// A naive NCHW tensor of one item.
struct nt {
    int c = 0, h = 0, w = 0;
    std::vector<double> v;
    double &at(int ci, int y, int x) { return v[(ci * h + y) * w + x]; }
    double at(int ci, int y, int x) const { return v[(ci * h + y) * w + x]; }
};

nt make_nt(int c, int h, int w) {
    return {c, h, w, std::vector<double>(size_t(c) * h * w)};
}

tensor random_tensor(std::vector<int64_t> shape, std::mt19937 &rng,
                     float stddev = 1.0F) {
    tensor t;
    t.shape = std::move(shape);
    t.data.resize(t.elements());
    std::normal_distribution<float> dist(0.0F, stddev);
    for (float &x : t.data)
        x = dist(rng);
    return t;
}

std::vector<float> random_input(size_t n, std::mt19937 &rng) {
    std::vector<float> v(n);
    std::uniform_real_distribution<float> dist(-1.0F, 1.0F);
    for (float &x : v)
        x = dist(rng);
    return v;
}

nt from_floats(const float *p, int c, int h, int w) {
    nt t = make_nt(c, h, w);
    for (size_t i = 0; i < t.v.size(); ++i)
        t.v[i] = p[i];
    return t;
}

// Naive layers, written from the definitions.
nt ref_conv(const nt &in, const tensor_map &w, const layer_desc &l,
            const nt *residual) {
    const auto &k = w.at(l.name + "/weight");
    int kk = l.kernel;
    int oh = (in.h + l.pad_begin + l.pad_end - kk) / l.stride + 1;
    int ow = (in.w + l.pad_begin + l.pad_end - kk) / l.stride + 1;
    nt out = make_nt(l.channels, oh, ow);
    auto opt = [&](const char *what, int o, double fallback) {
        auto it = w.find(l.name + "/" + what);
        return it == w.end() ? fallback : double{it->second.data[o]};
    };
    for (int o = 0; o < l.channels; ++o) {
        for (int y = 0; y < oh; ++y) {
            for (int x = 0; x < ow; ++x) {
                double s = 0;
                for (int c = 0; c < in.c; ++c) {
                    for (int i = 0; i < kk; ++i) {
                        for (int j = 0; j < kk; ++j) {
                            int yy = y * l.stride + i - l.pad_begin;
                            int xx = x * l.stride + j - l.pad_begin;
                            if (yy < 0 || xx < 0 || yy >= in.h || xx >= in.w) {
                                continue;
                            }
                            s += k.data[((o * in.c + c) * kk + i) * kk + j] *
                                 in.at(c, yy, xx);
                        }
                    }
                }
                s = (s + opt("bias", o, 0)) * opt("scale", o, 1) +
                    opt("shift", o, 0);
                if (residual)
                    s += residual->at(o, y, x);
                out.at(o, y, x) = l.relu ? std::max(s, 0.0) : s;
            }
        }
    }
    return out;
}

nt ref_pool(const nt &in, const layer_desc &l) {
    int oh = (in.h + l.pad_begin + l.pad_end - l.kernel) / l.stride + 1;
    int ow = (in.w + l.pad_begin + l.pad_end - l.kernel) / l.stride + 1;
    nt out = make_nt(in.c, oh, ow);
    for (int c = 0; c < in.c; ++c) {
        for (int y = 0; y < oh; ++y) {
            for (int x = 0; x < ow; ++x) {
                double best = -INFINITY, sum = 0;
                int count = 0;
                for (int i = 0; i < l.kernel; ++i) {
                    for (int j = 0; j < l.kernel; ++j) {
                        int yy = y * l.stride + i - l.pad_begin;
                        int xx = x * l.stride + j - l.pad_begin;
                        if (yy < 0 || xx < 0 || yy >= in.h || xx >= in.w) {
                            continue;
                        }
                        best = std::max(best, in.at(c, yy, xx));
                        sum += in.at(c, yy, xx);
                        ++count;
                    }
                }
                out.at(c, y, x) =
                    l.kind == layer_kind::max_pool ? best : sum / count;
            }
        }
    }
    return out;
}

nt ref_global_pool(const nt &in) {
    nt out = make_nt(in.c, 1, 1);
    for (int c = 0; c < in.c; ++c) {
        double s = 0;
        for (int y = 0; y < in.h; ++y) {
            for (int x = 0; x < in.w; ++x)
                s += in.at(c, y, x);
        }
        out.at(c, 0, 0) = s / (in.h * in.w);
    }
    return out;
}

nt ref_pad(const nt &in, const layer_desc &l) {
    nt out = make_nt(l.channels, in.h + l.pad_end, in.w + l.pad_end);
    for (int c = 0; c < in.c; ++c) {
        for (int y = 0; y < in.h; ++y) {
            for (int x = 0; x < in.w; ++x)
                out.at(c, y, x) = in.at(c, y, x);
        }
    }
    return out;
}

nt ref_add(const nt &a, const nt &b, bool relu) {
    nt out = a;
    for (size_t i = 0; i < out.v.size(); ++i) {
        out.v[i] += b.v[i];
        if (relu)
            out.v[i] = std::max(out.v[i], 0.0);
    }
    return out;
}

nt ref_inner_product(const nt &in, const tensor_map &w, const layer_desc &l) {
    const auto &k = w.at(l.name + "/weight");
    auto bias = w.find(l.name + "/bias");
    nt out = make_nt(l.channels, 1, 1);
    for (int o = 0; o < l.channels; ++o) {
        double s = bias == w.end() ? 0 : bias->second.data[o];
        for (size_t i = 0; i < in.v.size(); ++i) {
            s += k.data[o * in.v.size() + i] * in.v[i];
        }
        out.v[o] = l.relu ? std::max(s, 0.0) : s;
    }
    return out;
}

// Runs a whole description through the naive layers.
std::vector<double> ref_network(const network_desc &d, const tensor_map &w,
                                const float *input) {
    std::map<std::string, nt> t;
    t["input"] = from_floats(input, d.channels, d.height, d.width);
    std::string prev = "input";
    for (const layer_desc &l : d.layers) {
        const nt &in = t.at(l.input.empty() ? prev : l.input);
        const nt *second = l.second.empty() ? nullptr : &t.at(l.second);
        switch (l.kind) {
            case layer_kind::conv:
                t[l.name] = ref_conv(in, w, l, second);
                break;
            case layer_kind::max_pool:
            case layer_kind::avg_pool:
                t[l.name] = ref_pool(in, l);
                break;
            case layer_kind::global_avg_pool:
                t[l.name] = ref_global_pool(in);
                break;
            case layer_kind::pad:
                t[l.name] = ref_pad(in, l);
                break;
            case layer_kind::add:
                t[l.name] = ref_add(in, *second, l.relu);
                break;
            case layer_kind::inner_product:
                t[l.name] = ref_inner_product(in, w, l);
                break;
        }
        prev = l.name;
    }
    std::vector<double> out = t.at(d.output.empty() ? prev : d.output).v;
    if (d.l2_normalize) {
        double s = 0;
        for (double x : out)
            s += x * x;
        for (double &x : out)
            x /= std::sqrt(s);
    }
    return out;
}

// Executor vs reference on `n` random items; returns the worst relative
// error over the batch.
double compare(const network_desc &d, const tensor_map &w, int n,
               precision p = precision::f32) {
    std::mt19937 rng(kSeed);
    auto net = network::create(d, w, p);
    EXPECT_TRUE(net.is_ok()) << net.error().to_string();
    if (!net)
        return INFINITY;
    auto input = random_input(size_t(n) * (*net)->input_floats(), rng);
    std::vector<float> out(size_t(n) * (*net)->output_dim());
    status st = (*net)->run(input, n, out);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    double worst = 0, scale = 0;
    for (int i = 0; i < n; ++i) {
        auto ref = ref_network(d, w, input.data() + i * (*net)->input_floats());
        EXPECT_EQ(ref.size(), size_t((*net)->output_dim()));
        for (size_t k = 0; k < ref.size(); ++k) {
            worst = std::max(worst, std::abs(ref[k] - out[i * ref.size() + k]));
            scale = std::max(scale, std::abs(ref[k]));
        }
    }
    return worst / std::max(scale, 1e-12);
}

network_desc one_input(int c, int h, int w) {
    network_desc d;
    d.architecture = "test";
    d.channels = c;
    d.height = h;
    d.width = w;
    return d;
}

layer_desc layer(layer_kind kind, const std::string &name, int channels = 0,
                 int kernel = 1, int stride = 1, int pad = 0,
                 bool relu = false) {
    layer_desc l;
    l.kind = kind;
    l.name = name;
    l.channels = channels;
    l.kernel = kernel;
    l.stride = stride;
    l.pad_begin = l.pad_end = pad;
    l.relu = relu;
    return l;
}

TEST(NetworkLayerTest, ConvWithBiasScaleShiftAndReluMatchesNaive) {
    std::mt19937 rng(kSeed);
    struct cfg {
        int k, s, pad;
    };
    for (cfg c : {cfg{3, 1, 1}, cfg{3, 2, 0}, cfg{7, 2, 0}, cfg{1, 1, 0},
                  cfg{5, 3, 2}}) {
        network_desc d = one_input(7, 13, 13);
        d.layers.push_back(
            layer(layer_kind::conv, "c", 5, c.k, c.s, c.pad, true));
        tensor_map w;
        w["c/weight"] = random_tensor({5, 7, c.k, c.k}, rng);
        w["c/bias"] = random_tensor({5}, rng);
        w["c/scale"] = random_tensor({5}, rng);
        w["c/shift"] = random_tensor({5}, rng);
        EXPECT_LE(compare(d, w, 3), kF32RelativeTolerance)
            << "kernel " << c.k << " stride " << c.s;
    }
}

TEST(NetworkLayerTest, ConvWithResidualSumMatchesNaive) {
    std::mt19937 rng(kSeed);
    network_desc d = one_input(16, 13, 13);
    d.layers.push_back(layer(layer_kind::conv, "a", 16, 3, 1, 1, true));
    layer_desc b = layer(layer_kind::conv, "b", 16, 3, 1, 1, true);
    b.second = "input";
    d.layers.push_back(b);
    tensor_map w;
    w["a/weight"] = random_tensor({16, 16, 3, 3}, rng, 0.2F);
    w["b/weight"] = random_tensor({16, 16, 3, 3}, rng, 0.2F);
    w["b/bias"] = random_tensor({16}, rng);
    EXPECT_LE(compare(d, w, 2), kF32RelativeTolerance);
}

TEST(NetworkLayerTest, MaxAndAveragePoolingMatchNaive) {
    for (layer_kind kind : {layer_kind::max_pool, layer_kind::avg_pool}) {
        for (int k : {2, 3}) {
            network_desc d = one_input(7, 13, 13);
            d.layers.push_back(layer(kind, "p", 0, k, 2, 0));
            EXPECT_LE(compare(d, {}, 2), kF32RelativeTolerance)
                << "kernel " << k;
        }
    }
}

TEST(NetworkLayerTest, GlobalPoolingPadAddAndInnerProductMatchNaive) {
    std::mt19937 rng(kSeed);
    network_desc d = one_input(7, 13, 13);
    d.layers.push_back(layer(layer_kind::avg_pool, "p", 0, 2, 2, 0));
    layer_desc pad = layer(layer_kind::pad, "pad", 12);
    pad.pad_end = 1;
    d.layers.push_back(pad);  // 7 x 6 x 6 -> 12 x 7 x 7
    d.layers.push_back(layer(layer_kind::conv, "c", 12, 3, 2, 1, false));
    d.layers.push_back(layer(layer_kind::conv, "c2", 12, 1, 1, 0, false));
    layer_desc up = layer(layer_kind::pad, "up", 12);
    up.pad_end = 0;
    d.layers.push_back(up);
    layer_desc add = layer(layer_kind::add, "add", 0, 1, 1, 0, true);
    add.second = "c";
    d.layers.push_back(add);
    d.layers.push_back(layer(layer_kind::inner_product, "fc0", 9, 1, 1, 0,
                             true));  // from 12 x 4 x 4
    d.layers.push_back(layer(layer_kind::inner_product, "fc1", 5));
    tensor_map w;
    w["c/weight"] = random_tensor({12, 12, 3, 3}, rng);
    w["c2/weight"] = random_tensor({12, 12, 1, 1}, rng);
    w["fc0/weight"] = random_tensor({9, 12 * 4 * 4}, rng);
    w["fc0/bias"] = random_tensor({9}, rng);
    w["fc1/weight"] = random_tensor({5, 9}, rng);
    EXPECT_LE(compare(d, w, 3), kF32RelativeTolerance);

    network_desc g = one_input(7, 13, 13);
    g.layers.push_back(layer(layer_kind::global_avg_pool, "g"));
    g.l2_normalize = true;
    EXPECT_LE(compare(g, {}, 2), kF32RelativeTolerance);
}

TEST(NetworkLayerTest, ChannelPaddingMatchesNaive) {
    network_desc d = one_input(32, 9, 9);
    layer_desc pad = layer(layer_kind::pad, "pad", 64);
    pad.pad_end = 1;
    d.layers.push_back(pad);
    EXPECT_LE(compare(d, {}, 2), kF32RelativeTolerance);
}

// The whole VGG16 (13 convs, 5 pools, global pool, head, L2) at 32 x 32.
TEST(NetworkModelTest, Vgg16At32MatchesNaive) {
    vgg16_params p;
    p.input_size = 32;
    network_desc d = vgg16_network(p);
    tensor_map w;
    fill_missing_weights(d, kSeed, w);
    EXPECT_LE(compare(d, w, 2), kF32RelativeTolerance);
}

TEST(NetworkModelTest, FaceResnetStructureMatchesNaiveWithRandomWeights) {
    network_desc d = face_resnet_network();
    tensor_map w;
    fill_missing_weights(d, kSeed, w);
    EXPECT_LE(compare(d, w, 1), kF32RelativeTolerance);
}

TEST(NetworkModelTest, EmbeddingIndependentOfBatchAndThreads) {
    vgg16_params p;
    p.input_size = 48;
    network_desc d = vgg16_network(p);
    tensor_map w;
    fill_missing_weights(d, kSeed, w);
    auto net = network::create(d, w, precision::f32);
    ASSERT_TRUE(net.is_ok());
    int per = (*net)->input_floats(), dim = (*net)->output_dim();
    std::mt19937 rng(kSeed);
    auto batch = random_input(size_t(5) * per, rng);

    std::vector<float> alone(dim), together(size_t(5) * dim), one_thread(dim);
    ASSERT_TRUE(
        (*net)
            ->run(std::span<const float>(batch).subspan(2 * per, per), 1, alone)
            .is_ok());
    ASSERT_TRUE((*net)->run(batch, 5, together).is_ok());
    // Alone with two threads, in a batch of 5 with one.
    int threads = omp_get_max_threads();
    omp_set_num_threads(2);
    ASSERT_TRUE((*net)
                    ->run(std::span<const float>(batch).subspan(2 * per, per),
                          1, one_thread)
                    .is_ok());
    omp_set_num_threads(threads);
    for (int k = 0; k < dim; ++k) {
        EXPECT_NEAR(alone[k], together[2 * dim + k], 1e-5);
        EXPECT_NEAR(alone[k], one_thread[k], 1e-5);
    }
}

TEST(NetworkModelTest, Bf16CloseToF32) {
    if (!check_precision(precision::bf16).is_ok()) {
        GTEST_SKIP() << check_precision(precision::bf16).message();
    }
    vgg16_params p;
    p.input_size = 32;
    network_desc d = vgg16_network(p);
    d.output = kVgg16Features;
    d.l2_normalize = false;
    tensor_map w;
    fill_missing_weights(d, kSeed, w);
    auto f = network::create(d, w, precision::f32);
    auto b = network::create(d, w, precision::bf16);
    ASSERT_TRUE(f.is_ok() && b.is_ok());
    std::mt19937 rng(kSeed);
    auto input = random_input(size_t(2) * (*f)->input_floats(), rng);
    std::vector<float> of(2 * 512), ob(2 * 512);
    ASSERT_TRUE((*f)->run(input, 2, of).is_ok());
    ASSERT_TRUE((*b)->run(input, 2, ob).is_ok());
    for (int i = 0; i < 2; ++i) {
        EXPECT_GE(facevec::testing::cosine(&of[i * 512], &ob[i * 512], 512),
                  kBf16MinCosine);
    }
}

TEST(NetworkErrorTest, MissingOrMisshapedWeightIsAMismatchNamingIt) {
    network_desc d = one_input(3, 8, 8);
    d.layers.push_back(layer(layer_kind::conv, "c", 4, 3, 1, 1));
    auto missing = network::create(d, {}, precision::f32);
    ASSERT_FALSE(missing.is_ok());
    EXPECT_EQ(missing.error().code(), error_code::mismatch);
    EXPECT_NE(missing.error().message().find("c/weight is missing"),
              std::string::npos);

    std::mt19937 rng(kSeed);
    tensor_map w;
    w["c/weight"] = random_tensor({4, 3, 5, 5}, rng);
    auto wrong = network::create(d, w, precision::f32);
    ASSERT_FALSE(wrong.is_ok());
    EXPECT_EQ(wrong.error().code(), error_code::mismatch);
    EXPECT_NE(wrong.error().message().find("[4, 3, 5, 5], expected [4, 3, "
                                           "3, 3]"),
              std::string::npos);
}

TEST(NetworkErrorTest, BadDescriptionsAndInputsAreInvalidArguments) {
    network_desc d = one_input(3, 8, 8);
    layer_desc l = layer(layer_kind::max_pool, "p", 0, 2, 2, 0);
    l.input = "nowhere";
    d.layers.push_back(l);
    auto unknown = infer_shapes(d);
    ASSERT_FALSE(unknown.is_ok());
    EXPECT_NE(unknown.error().message().find("unknown input nowhere"),
              std::string::npos);

    network_desc ok = one_input(3, 8, 8);
    ok.layers.push_back(layer(layer_kind::max_pool, "p", 0, 2, 2, 0));
    auto net = network::create(ok, {}, precision::f32);
    ASSERT_TRUE(net.is_ok());
    std::vector<float> in(10), out(3 * 4 * 4);
    status st = (*net)->run(in, 1, out);
    EXPECT_EQ(st.code(), error_code::invalid_argument);
    EXPECT_NE(st.message().find("needs 192 input"), std::string::npos);

    auto p = parse_precision("fp16");
    ASSERT_FALSE(p.is_ok());
    EXPECT_NE(p.error().message().find("'fp16'"), std::string::npos);
}

TEST(WeightsFileTest, RoundTripsAndDetectsDamage) {
    facevec::testing::temp_dir tmp;
    std::mt19937 rng(kSeed);
    weights_file w;
    w.architecture = "vgg16";
    w.params = vgg16_params{}.to_json();
    w.tensors["a/weight"] = random_tensor({3, 2, 1, 1}, rng);
    w.tensors["b"] = random_tensor({5}, rng);
    ASSERT_TRUE(write_weights(tmp.str("w.fvw"), w).is_ok());
    auto back = read_weights(tmp.str("w.fvw"));
    ASSERT_TRUE(back.is_ok()) << back.error().to_string();
    EXPECT_EQ(back->architecture, "vgg16");
    EXPECT_EQ(back->params, w.params);
    EXPECT_EQ(back->tensors["a/weight"].data, w.tensors["a/weight"].data);
    EXPECT_EQ(back->tensors["b"].shape, std::vector<int64_t>{5});

    // One flipped byte in the data: checksum mismatch.
    auto bytes = serialize_weights(w);
    ASSERT_TRUE(bytes.is_ok());
    std::vector<uint8_t> damaged = *bytes;
    damaged[damaged.size() - 40] ^= 1;
    auto bad = parse_weights(damaged, "w.fvw");
    ASSERT_FALSE(bad.is_ok());
    EXPECT_EQ(bad.error().code(), error_code::corruption);
    EXPECT_NE(bad.error().message().find("checksum mismatch"),
              std::string::npos);

    std::vector<uint8_t> not_ours(bytes->begin(), bytes->end());
    not_ours[0] = 'X';
    EXPECT_NE(parse_weights(not_ours, "x").error().message().find("bad magic"),
              std::string::npos);
    EXPECT_EQ(read_weights(tmp.str("absent.fvw")).error().code(),
              error_code::not_found);
}

// A TF.js manifest with a uint8-quantised and a float32 tensor.
TEST(ImportTest, TfjsManifestDecodesQuantisedAndFloatTensors) {
    facevec::testing::temp_dir tmp;
    nlohmann::json manifest = nlohmann::json::array(
        {{{"paths", {"w.bin"}},
          {"weights",
           {{{"name", "q"},
             {"shape", {2, 2}},
             {"dtype", "float32"},
             {"quantization",
              {{"dtype", "uint8"}, {"scale", 0.5}, {"min", -1.0}}}},
            {{"name", "f"}, {"shape", {2}}, {"dtype", "float32"}}}}}});
    std::ofstream(tmp.str("m.json")) << manifest.dump();
    std::ofstream bin(tmp.str("w.bin"), std::ios::binary);
    const uint8_t q[4] = {0, 1, 2, 255};
    const float f[2] = {1.5F, -2.25F};
    bin.write(reinterpret_cast<const char *>(q), sizeof(q));
    bin.write(reinterpret_cast<const char *>(f), sizeof(f));
    bin.close();

    auto t = read_tfjs_weights(tmp.str("m.json"));
    ASSERT_TRUE(t.is_ok()) << t.error().to_string();
    EXPECT_EQ(t->at("q").data,
              (std::vector<float>{-1.0F, -0.5F, 0.0F, 126.5F}));
    EXPECT_EQ(t->at("f").data, (std::vector<float>{1.5F, -2.25F}));

    // The same manifest over a truncated file.
    std::ofstream(tmp.str("w.bin"), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char *>(q), sizeof(q));
    auto short_file = read_tfjs_weights(tmp.str("m.json"));
    ASSERT_FALSE(short_file.is_ok());
    EXPECT_EQ(short_file.error().code(), error_code::corruption);
    EXPECT_NE(short_file.error().message().find("tensor f runs past"),
              std::string::npos);
}

// Writes a Keras-layout HDF5 file with VGG16's names and shapes (random
// values) and imports it.
TEST(ImportTest, KerasVgg16FileImportsEndToEnd) {
    facevec::testing::temp_dir tmp;
    std::string path = tmp.str(kKerasVgg16File);
    std::mt19937 rng(kSeed);
    std::map<std::string, tensor> written;
    hid_t file =
        H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    auto specs = required_weights(vgg16_network({}));
    ASSERT_TRUE(specs.is_ok());
    for (const weight_spec &s : *specs) {
        if (!s.name.starts_with("block"))
            continue;
        std::string layer = s.name.substr(0, s.name.rfind('/'));
        bool kernel = s.name.ends_with("/weight");
        if (!kernel && !s.name.ends_with("/bias"))
            continue;
        std::vector<int64_t> shape =
            kernel ? std::vector<int64_t>{s.shape[2], s.shape[3], s.shape[1],
                                          s.shape[0]}
                   : s.shape;
        tensor t = random_tensor(shape, rng);
        if (H5Lexists(file, layer.c_str(), H5P_DEFAULT) <= 0) {
            H5Gclose(H5Gcreate2(file, layer.c_str(), H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT));
            H5Gclose(H5Gcreate2(file, (layer + "/" + layer).c_str(),
                                H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        }
        std::vector<hsize_t> dims(shape.begin(), shape.end());
        hid_t space = H5Screate_simple(static_cast<int>(dims.size()),
                                       dims.data(), nullptr);
        std::string ds_name =
            layer + "/" + layer + "/" + (kernel ? "kernel:0" : "bias:0");
        hid_t ds = H5Dcreate2(file, ds_name.c_str(), H5T_IEEE_F32LE, space,
                              H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                 t.data.data());
        H5Dclose(ds);
        H5Sclose(space);
        written[s.name] = std::move(t);
    }
    H5Fclose(file);

    auto imported = import_keras_vgg16(path);
    ASSERT_TRUE(imported.is_ok()) << imported.error().to_string();
    EXPECT_EQ(imported->size(), 26U);
    // block2_conv1: HWIO (3, 3, 64, 128) -> OIHW; element (y=1, x=2, i=5,
    // o=7) lands at (7, 5, 1, 2).
    const tensor &k = imported->at("block2_conv1/weight");
    EXPECT_EQ(k.shape, (std::vector<int64_t>{128, 64, 3, 3}));
    EXPECT_EQ(
        k.data[((7 * 64 + 5) * 3 + 1) * 3 + 2],
        written["block2_conv1/weight"].data[((1 * 3 + 2) * 64 + 5) * 128 + 7]);
    EXPECT_EQ(imported->at("block5_conv3/bias").data,
              written["block5_conv3/bias"].data);

    // The cached file makes the built-in vgg16 use it.
    setenv("FACEVEC_CACHE", tmp.str().c_str(), 1);
    embedder_options opts;
    opts.input_size = 32;
    auto e = embedder::load(kVgg16, opts);
    unsetenv("FACEVEC_CACHE");
    ASSERT_TRUE(e.is_ok()) << e.error().to_string();
    ASSERT_EQ((*e)->notes().size(), 1U);  // only the head is random
    EXPECT_NE((*e)->notes()[0].find("embedding head"), std::string::npos);
    EXPECT_EQ((*e)->weights().tensors.at("block2_conv1/weight").data, k.data);
}

TEST(ImportTest, KerasImportErrorsNameTheFileAndDataset) {
    facevec::testing::temp_dir tmp;
    std::ofstream(tmp.str("x.h5")) << "not hdf5";
    auto bad = import_keras_vgg16(tmp.str("x.h5"));
    ASSERT_FALSE(bad.is_ok());
    EXPECT_EQ(bad.error().code(), error_code::corruption);
    EXPECT_NE(bad.error().message().find("not an HDF5 file"),
              std::string::npos);

    hid_t file = H5Fcreate(tmp.str("e.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT,
                           H5P_DEFAULT);
    H5Fclose(file);
    auto empty = import_keras_vgg16(tmp.str("e.h5"));
    ASSERT_FALSE(empty.is_ok());
    EXPECT_EQ(empty.error().code(), error_code::mismatch);
    EXPECT_NE(empty.error().message().find(
                  "block1_conv1/block1_conv1/kernel:0 is missing"),
              std::string::npos);
}

TEST(EmbedderTest, RandomVgg16SaysSoAndUnknownModelsAreNotFound) {
    facevec::testing::temp_dir tmp;
    setenv("FACEVEC_CACHE", tmp.str().c_str(), 1);
    embedder_options opts;
    opts.input_size = 32;
    auto e = embedder::load(kVgg16, opts);
    unsetenv("FACEVEC_CACHE");
    ASSERT_TRUE(e.is_ok()) << e.error().to_string();
    EXPECT_FALSE((*e)->pretrained());
    ASSERT_EQ((*e)->notes().size(), 2U);
    EXPECT_NE((*e)->notes()[0].find("random weights"), std::string::npos);
    EXPECT_TRUE((*e)->normalized());
    EXPECT_EQ((*e)->dim(), 128);

    auto missing = embedder::load("no-such-model");
    ASSERT_FALSE(missing.is_ok());
    EXPECT_EQ(missing.error().code(), error_code::not_found);
    EXPECT_NE(missing.error().message().find("'no-such-model'"),
              std::string::npos);

    embedder_options bad;
    bad.align = "sideways";
    auto b = embedder::load(kVgg16, bad);
    ASSERT_FALSE(b.is_ok());
    EXPECT_NE(b.error().message().find("align 'sideways'"), std::string::npos);

    std::vector<float> wrong(7);
    auto r = (*e)->embed_tensors(wrong);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
}

int process_threads() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("Threads:", 0) == 0)
            return std::stoi(line.substr(8));
    }
    return -1;
}

// 8 callers embedding at once: the process never holds more than the
// callers, the compute thread and its OpenMP team (plus a little slack),
// and every caller gets the same embedding as a lone call.
TEST(ThreadingTest, ConcurrentCallersKeepThreadCountBounded) {
    constexpr int kCallers = 8;
    constexpr int kRounds = 4;
    constexpr int kSlack = 2;
    // Two compute threads when this test is the first compute user of the
    // process (as under ctest, one process per test).
    setenv(kThreadsEnv, "2", /*overwrite=*/1);
    embedder_options opts;
    opts.input_size = 32;
    auto e = embedder::load(kVgg16, opts);
    ASSERT_TRUE(e.is_ok());
    std::mt19937 rng(kSeed);
    auto input = random_input((*e)->input_floats(), rng);
    auto expected = (*e)->embed_tensors(input);
    ASSERT_TRUE(expected.is_ok());

    int before = process_threads();
    std::atomic<int> peak{0};
    std::atomic<bool> done{false};
    std::thread monitor([&] {
        while (!done) {
            peak = std::max(peak.load(), process_threads());
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    std::atomic<int> mismatches{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < kCallers; ++t) {
        callers.emplace_back([&] {
            for (int r = 0; r < kRounds; ++r) {
                auto out = (*e)->embed_tensors(input);
                if (!out || *out != *expected)
                    ++mismatches;
            }
        });
    }
    for (auto &t : callers)
        t.join();
    done = true;
    monitor.join();

    EXPECT_EQ(mismatches, 0);
    // `before` already counts the compute thread and its team (the load
    // ran a warm-up); only the callers and the monitor are added.
    EXPECT_LE(peak, before + kCallers + 1 + kSlack)
        << "threads before " << before << ", compute threads "
        << compute_threads();
}

}  // namespace
}  // namespace facevec::embed
