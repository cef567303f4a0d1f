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

#include <omp.h>

#include "common/threading.h"
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
// Least cosine between bf16 and f32 embeddings of one image.
constexpr double kBf16MinCosine = 0.99;
// Pairs of each kind (same, different) read from pairsDevTest.txt, which
// lists 250 of each: enough for the check, short enough for the suite.
constexpr int kLfwPairsPerKind = 100;

// The suite runs two test programs at once on two cores: one compute
// thread each unless FACEVEC_THREADS says otherwise (OpenMP teams on an
// oversubscribed machine wait on each other at every barrier).
class one_thread_environment : public ::testing::Environment {
  public:
    void SetUp() override {
        if (std::getenv(kThreadsEnv) == nullptr) {
            setenv(kThreadsEnv, "1", /*overwrite=*/0);
            omp_set_num_threads(1);
        }
    }
};
const auto *const kOneThread =
    ::testing::AddGlobalTestEnvironment(new one_thread_environment);

struct reference_item {
    std::string file;
    std::vector<float> descriptor;
};

// The shared folder `name` (reference, faces): from the environment
// (test_util.h), else beside the checkout this test was built from.
std::string shared_folder(const std::string &from_env,
                          const std::string &name) {
    if (!from_env.empty())
        return from_env;
    std::string d = std::string(FACEVEC_SHARED_DIR) + "/" + name;
    return fs::is_directory(d) ? d : std::string();
}

std::string reference_folder() {
    std::string d =
        shared_folder(facevec::testing::reference_dir(), "reference");
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

double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; ++i) {
        ab += double{a[i]} * b[i];
        aa += double{a[i]} * a[i];
        bb += double{b[i]} * b[i];
    }
    return ab / std::sqrt(aa * bb);
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
        double c =
            cosine(out->data() + i * 128, items_[i].descriptor.data(), 128);
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

// LFW pairsDevTest: same-person distances must be clearly smaller than
// different-person ones. Prints the accuracy at the best threshold.
// Limitation: the first kLfwPairsPerKind pairs of each kind only (time).
TEST(FaceResnetLfwTest, SamePersonPairsAreCloserOnPairsDevTest) {
    std::string faces = shared_folder(facevec::testing::faces_dir(), "faces");
    if (!faces.empty() && !fs::is_directory(faces + "/lfw"))
        faces.clear();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (FACEVEC_FACES)";
    if (!weights_cached()) {
        GTEST_SKIP() << "face-api weights missing: run tools/fetch_models.sh";
    }
    std::string pairs_path = faces + "/pairsDevTest.txt";
    if (!fs::exists(pairs_path)) {
        GTEST_SKIP() << "no pairsDevTest.txt in " << faces;
    }
    embedder_options opts;
    opts.align = "center";
    auto e = embedder::load(kFaceResnet, opts);
    ASSERT_TRUE(e.is_ok()) << e.error().to_string();

    // pairsDevTest.txt: a count, then "name i j" (same person) or
    // "name1 i name2 j" (different) lines.
    std::ifstream in(pairs_path);
    std::string line;
    std::getline(in, line);
    auto path_of = [&](const std::string &name, int i) {
        char num[8];
        std::snprintf(num, sizeof(num), "%04d", i);
        std::string dir = faces + "/lfw/" + name + "/";
        return dir + name + "_" + num + ".jpg";
    };
    std::map<std::string, std::vector<float>> cache;
    auto embedding = [&](const std::string &path) -> std::vector<float> {
        auto it = cache.find(path);
        if (it != cache.end())
            return it->second;
        auto img = decode_file(path);
        if (!img)
            return {};
        auto v = (*e)->embed_one(*img, path);
        return cache[path] = v.is_ok() ? *v : std::vector<float>{};
    };
    std::vector<std::pair<double, bool>> scored;
    int same_pairs = 0, different_pairs = 0;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::vector<std::string> f;
        for (std::string t; ls >> t;)
            f.push_back(t);
        std::string a, b;
        bool same = f.size() == 3;
        if (same) {
            a = path_of(f[0], std::stoi(f[1]));
            b = path_of(f[0], std::stoi(f[2]));
        } else if (f.size() == 4) {
            a = path_of(f[0], std::stoi(f[1]));
            b = path_of(f[2], std::stoi(f[3]));
        } else {
            continue;
        }
        int &taken = same ? same_pairs : different_pairs;
        if (taken++ >= kLfwPairsPerKind)
            continue;
        auto va = embedding(a), vb = embedding(b);
        ASSERT_FALSE(va.empty() || vb.empty()) << a << " or " << b;
        double d = 0;
        for (size_t k = 0; k < va.size(); ++k) {
            d += (va[k] - vb[k]) * (va[k] - vb[k]);
        }
        scored.emplace_back(std::sqrt(d), same);
    }
    ASSERT_FALSE(scored.empty());

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

}  // namespace
}  // namespace facevec::embed
