// The pretrained face ResNet against the exact outputs of face-api's own
// JavaScript (../shared/reference/face-resnet), and its behaviour on LFW.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/import_faceapi.h"
#include "embed/models.h"
#include "tests/test_util.h"

namespace facevec::embed {
namespace {

namespace fs = std::filesystem;

// Per-component tolerance against the reference in f32.
constexpr float kF32Tolerance = 1e-4F;
// Least cosine between bf16 embeddings and the f32 reference outputs.
constexpr double kBf16MinCosine = 0.99;
// Pairs of each kind (same, different) read from pairsDevTest.txt, which
// lists 500 of each: enough for the check, short enough for the suite.
constexpr int kLfwPairsPerKind = 100;
// Pairs of each kind whose photos the bf16 comparison embeds twice.
constexpr int kBf16LfwPairsPerKind = 20;
// Least cosine between bf16 and f32 embeddings of one LFW photo (centre
// crop). Measured on 500 dlib-aligned LFW faces: min 0.99997, mean
// 0.99998; the bound leaves 10x that distance from 1.
constexpr double kBf16LfwMinCosine = 0.9997;

const auto *const kOneThread = ::testing::AddGlobalTestEnvironment(
    new facevec::testing::one_compute_thread_environment);

struct reference_item {
    std::string file;
    std::vector<float> descriptor;
};

// ../shared/reference/face-resnet, or "" when absent.
std::string reference_folder() {
    std::string d = facevec::testing::reference_dir();
    return d.empty() ? d : d + "/face-resnet";
}

std::vector<reference_item> read_reference(const std::string &dir) {
    std::ifstream in(dir + "/expected.json");
    auto j = nlohmann::json::parse(in);
    std::vector<reference_item> items;
    for (const auto &item : j.at("items")) {
        items.push_back({item.at("file").get<std::string>(),
                         item.at("descriptor").get<std::vector<float>>()});
    }
    return items;
}

bool weights_cached() {
    return fs::exists(fs::path(model_cache_dir()) /
                      (std::string("face-api-") + kFaceApiVersion) /
                      kFaceApiModel);
}

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class FaceResnetTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (reference_folder().empty()) {
            GTEST_SKIP() << "reference outputs not found (FACEVEC_REFERENCE)";
        }
        if (!weights_cached()) {
            GTEST_SKIP() << "face-api weights not in " << model_cache_dir()
                         << ": run tools/fetch_models.sh";
        }
        items_ = read_reference(reference_folder());
        for (const auto &item : items_) {
            auto img = decode_file(reference_folder() + "/" + item.file);
            ASSERT_TRUE(img.is_ok()) << img.error().to_string();
            images_.push_back(std::move(img).value());
        }
    }

    std::vector<reference_item> items_;
    std::vector<image> images_;
};

TEST_F(FaceResnetTest, MatchesFaceApiReferenceWithin1e4InF32) {
    auto e = embedder::load(kFaceResnet);
    ASSERT_TRUE(e.is_ok()) << e.error().to_string();
    ASSERT_EQ((*e)->dim(), 128);
    EXPECT_FALSE((*e)->normalized());
    EXPECT_TRUE((*e)->pretrained());

    auto out = (*e)->embed(images_);
    ASSERT_TRUE(out.is_ok()) << out.error().to_string();
    for (size_t i = 0; i < items_.size(); ++i) {
        float worst = 0;
        for (int k = 0; k < 128; ++k) {
            worst = std::max(
                worst, std::abs((*out)[i * 128 + k] - items_[i].descriptor[k]));
        }
        EXPECT_LE(worst, kF32Tolerance) << items_[i].file;
    }
}

TEST_F(FaceResnetTest, Bf16StaysCloseToF32) {
    if (!check_precision(precision::bf16).is_ok()) {
        GTEST_SKIP() << check_precision(precision::bf16).message();
    }
    embedder_options opts;
    opts.prec = precision::bf16;
    auto bf = embedder::load(kFaceResnet, opts);
    ASSERT_TRUE(bf.is_ok()) << bf.error().to_string();
    auto out = (*bf)->embed(images_);
    ASSERT_TRUE(out.is_ok()) << out.error().to_string();
    for (size_t i = 0; i < items_.size(); ++i) {
        double c = facevec::testing::cosine(out->data() + i * 128,
                                            items_[i].descriptor.data(), 128);
        EXPECT_GE(c, kBf16MinCosine) << items_[i].file;
    }
}

TEST_F(FaceResnetTest, FingerprintDependsOnPrecisionAndAlignment) {
    auto a = embedder::load(kFaceResnet);
    embedder_options center;
    center.align = "center";
    auto b = embedder::load(kFaceResnet, center);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    auto again = embedder::load(kFaceResnet);
    ASSERT_TRUE(again.is_ok());
    EXPECT_EQ((*a)->fingerprint(), (*again)->fingerprint());
    EXPECT_NE((*a)->fingerprint(), (*b)->fingerprint());
    EXPECT_TRUE((*a)->fingerprint().starts_with("face-resnet-f32-none-"));
}

TEST_F(FaceResnetTest, ImportedWeightsFileGivesTheSameEmbeddings) {
    facevec::testing::temp_dir tmp;
    fs::path manifest = fs::path(model_cache_dir()) /
                        (std::string("face-api-") + kFaceApiVersion) /
                        kFaceApiManifest;
    auto w = import_faceapi(manifest.string(), kFaceApiModelSha256);
    ASSERT_TRUE(w.is_ok()) << w.error().to_string();
    ASSERT_TRUE(write_weights(tmp.str("face.fvw"), *w).is_ok());

    auto from_file = embedder::load(tmp.str("face.fvw"));
    auto built_in = embedder::load(kFaceResnet);
    ASSERT_TRUE(from_file.is_ok()) << from_file.error().to_string();
    ASSERT_TRUE(built_in.is_ok());
    EXPECT_EQ((*from_file)->fingerprint(), (*built_in)->fingerprint());
    auto a = (*from_file)->embed_one(images_[0]);
    auto b = (*built_in)->embed_one(images_[0]);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    EXPECT_EQ(*a, *b);
}

// One pair of LFW photos and whether they show the same person.
struct lfw_pair {
    std::string a, b;
    bool same = false;
};

// The first `per_kind` same-person and `per_kind` different-person pairs
// of `faces`/pairsDevTest.txt: a count, then "name i j" (same person) or
// "name1 i name2 j" (different) lines.
std::vector<lfw_pair> read_dev_test_pairs(const std::string &faces,
                                          int per_kind) {
    auto path_of = [&](const std::string &name, const std::string &i) {
        char num[8];
        std::snprintf(num, sizeof(num), "%04d", std::stoi(i));
        return faces + "/lfw/" + name + "/" + name + "_" + num + ".jpg";
    };
    std::ifstream in(faces + "/pairsDevTest.txt");
    std::string line;
    std::getline(in, line);
    std::vector<lfw_pair> pairs;
    int taken[2] = {0, 0};
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::vector<std::string> f;
        for (std::string t; ls >> t;)
            f.push_back(t);
        lfw_pair p;
        p.same = f.size() == 3;
        if (p.same) {
            p.a = path_of(f[0], f[1]);
            p.b = path_of(f[0], f[2]);
        } else if (f.size() == 4) {
            p.a = path_of(f[0], f[1]);
            p.b = path_of(f[2], f[3]);
        } else {
            continue;
        }
        if (taken[p.same ? 1 : 0]++ < per_kind)
            pairs.push_back(p);
    }
    return pairs;
}

// LFW with pairsDevTest.txt and the face-api weights, or a skip reason.
std::string lfw_skip_reason(std::string *faces) {
    *faces = facevec::testing::faces_dir();
    if (faces->empty()) {
        return "LFW not found at " +
               facevec::testing::env_or("FACEVEC_FACES", FACEVEC_TEST_FACES) +
               "/lfw (set FACEVEC_FACES)";
    }
    if (!fs::exists(*faces + "/pairsDevTest.txt"))
        return "no pairsDevTest.txt in " + *faces;
    if (!weights_cached()) {
        return "face-api weights not in " + model_cache_dir() +
               ": run tools/fetch_models.sh";
    }
    return "";
}

// Embeddings of photos by path, each photo embedded once.
class embedding_cache {
  public:
    explicit embedding_cache(const embedder &e) : e_(e) {}

    // The photo's embedding, or empty when it cannot be read or embedded.
    const std::vector<float> &of(const std::string &path) {
        auto it = cache_.find(path);
        if (it != cache_.end())
            return it->second;
        std::vector<float> v;
        auto img = decode_file(path);
        if (img) {
            auto out = e_.embed_one(*img, path);
            if (out)
                v = std::move(out).value();
        }
        return cache_[path] = std::move(v);
    }

  private:
    const embedder &e_;
    std::map<std::string, std::vector<float>> cache_;
};

// LFW pairsDevTest: same-person distances must be clearly smaller than
// different-person ones. Prints the accuracy at the best threshold.
// Limitation: the first kLfwPairsPerKind pairs of each kind only (time);
// `facevec eval --pairs pairsDevTest.txt` runs all 500.
TEST(FaceResnetLfwTest, SamePersonPairsAreCloserOnPairsDevTest) {
    std::string faces;
    if (std::string why = lfw_skip_reason(&faces); !why.empty())
        GTEST_SKIP() << why;
    embedder_options opts;
    opts.align = "center";
    auto e = embedder::load(kFaceResnet, opts);
    ASSERT_TRUE(e.is_ok()) << e.error().to_string();
    embedding_cache cache(**e);

    std::vector<std::pair<double, bool>> scored;
    for (const lfw_pair &p : read_dev_test_pairs(faces, kLfwPairsPerKind)) {
        const auto &va = cache.of(p.a);
        const auto &vb = cache.of(p.b);
        ASSERT_FALSE(va.empty() || vb.empty()) << p.a << " or " << p.b;
        double d = 0;
        for (size_t k = 0; k < va.size(); ++k) {
            d += (va[k] - vb[k]) * (va[k] - vb[k]);
        }
        scored.emplace_back(std::sqrt(d), p.same);
    }
    ASSERT_EQ(scored.size(), size_t{2 * kLfwPairsPerKind});

    // Best threshold: sweep the sorted distances.
    std::sort(scored.begin(), scored.end());
    size_t total_same = std::count_if(scored.begin(), scored.end(),
                                      [](auto &p) { return p.second; });
    size_t correct = scored.size() - total_same, best = correct;
    double mean_same = 0, mean_diff = 0;
    for (const auto &[d, same] : scored) {
        correct += same ? 1 : -1;
        best = std::max(best, correct);
        (same ? mean_same : mean_diff) += d;
    }
    mean_same /= total_same;
    mean_diff /= scored.size() - total_same;
    double accuracy = static_cast<double>(best) / scored.size();
    std::printf(
        "LFW pairsDevTest (centre crop): %zu pairs, mean distance "
        "same %.3f, different %.3f, accuracy at best threshold "
        "%.3f\n",
        scored.size(), mean_same, mean_diff, accuracy);
    EXPECT_LT(mean_same, 0.75 * mean_diff);
    EXPECT_GE(accuracy, 0.85);
}

// bf16 embeddings of real faces point the same way as f32 ones: the
// photos of the first pairsDevTest pairs, embedded in both precisions.
TEST(FaceResnetLfwTest, Bf16EmbeddingsOfLfwPhotosStayCloseToF32) {
    std::string faces;
    if (std::string why = lfw_skip_reason(&faces); !why.empty())
        GTEST_SKIP() << why;
    if (!check_precision(precision::bf16).is_ok()) {
        GTEST_SKIP() << check_precision(precision::bf16).message();
    }
    embedder_options opts;
    opts.align = "center";
    auto f32 = embedder::load(kFaceResnet, opts);
    opts.prec = precision::bf16;
    auto bf16 = embedder::load(kFaceResnet, opts);
    ASSERT_TRUE(f32.is_ok() && bf16.is_ok());

    std::vector<std::string> paths;
    for (const lfw_pair &p : read_dev_test_pairs(faces, kBf16LfwPairsPerKind)) {
        paths.push_back(p.a);
        paths.push_back(p.b);
    }
    std::sort(paths.begin(), paths.end());
    paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
    std::vector<image> photos;
    for (const std::string &path : paths) {
        auto img = decode_file(path);
        ASSERT_TRUE(img.is_ok()) << img.error().to_string();
        photos.push_back(std::move(img).value());
    }
    auto a = (*f32)->embed(photos);
    auto b = (*bf16)->embed(photos);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    const int dim = (*f32)->dim();
    double worst = 1, sum = 0;
    for (size_t i = 0; i < photos.size(); ++i) {
        double c = facevec::testing::cosine(a->data() + i * dim,
                                            b->data() + i * dim, dim);
        EXPECT_GE(c, kBf16LfwMinCosine) << paths[i];
        worst = std::min(worst, c);
        sum += c;
    }
    std::printf("bf16 vs f32 on %zu LFW photos: cosine min %.5f, mean %.5f\n",
                photos.size(), worst, sum / photos.size());
}

}  // namespace
}  // namespace facevec::embed
