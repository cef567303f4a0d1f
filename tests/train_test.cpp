// Triplet training of the embedding head: gradients against finite
// differences, mining on hand-made distance matrices, optimisers, the
// feature cache and head files, and end-to-end training on synthetic
// clustered features (held-out clusters must separate better than with the
// untrained head). With LFW and the face-resnet weights present: a short
// real run on a small LFW subset, and `train --export-model` (vgg16 and
// face-resnet backbones) followed by `facevec embed --model FILE`.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/models.h"
#include "tests/test_util.h"
#include "train/eval.h"
#include "train/features.h"
#include "train/head.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#include "train/triplet.h"

namespace facevec::train {

// Found by argument-dependent lookup when gtest prints a triplet.
// NOLINTNEXTLINE(readability-identifier-naming): gtest's hook name.
void PrintTo(const triplet &t, std::ostream *os) {
    *os << "(" << t.anchor << "," << t.positive << "," << t.negative << ")";
}

namespace {

const auto *const kOneThread = ::testing::AddGlobalTestEnvironment(
    new facevec::testing::one_compute_thread_environment);

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kSeed = 7;
constexpr float kFiniteDiffStep = 1e-3f;
constexpr double kGradTolerance = 2e-2;

std::vector<float> gaussian(size_t n, std::mt19937 &gen, float sd = 1) {
    std::normal_distribution<float> nd(0, sd);
    std::vector<float> v(n);
    for (float &x : v)
        x = nd(gen);
    return v;
}

// The loss of fixed triplets through the head, for finite differences.
double head_loss(const embedding_head &h, const std::vector<float> &x, size_t n,
                 const std::vector<triplet> &ts, float margin) {
    std::vector<float> y(n * h.config().output_dim);
    h.embed(x.data(), n, y.data());
    return triplet_loss(y.data(), n, h.config().output_dim, ts, margin, nullptr)
        .loss;
}

void expect_head_gradients_match(const head_config &c) {
    const size_t n = 6;
    std::mt19937 gen(kSeed);
    auto h = embedding_head::create(c, kSeed);
    ASSERT_TRUE(h);
    std::vector<float> x = gaussian(n * c.input_dim, gen);
    // A margin this large keeps every triplet active: the loss is smooth.
    const float margin = 5;
    std::vector<triplet> ts = {{0, 1, 2}, {1, 0, 3}, {4, 5, 0}, {2, 3, 5}};

    head_activations acts;
    h->forward_train(x.data(), n, &acts);
    std::vector<float> gy(acts.y.size());
    triplet_loss(acts.y.data(), n, c.output_dim, ts, margin, gy.data());
    std::vector<std::vector<float>> grads;
    h->backward(acts, gy.data(), &grads);

    double worst = 0;
    for (size_t t = 0; t < h->tensors().size(); ++t) {
        for (size_t i = 0; i < grads[t].size(); ++i) {
            float &w = h->mutable_tensors()[t].data[i];
            const float keep = w;
            w = keep + kFiniteDiffStep;
            const double up = head_loss(h.value(), x, n, ts, margin);
            w = keep - kFiniteDiffStep;
            const double down = head_loss(h.value(), x, n, ts, margin);
            w = keep;
            const double numeric = (up - down) / (2 * kFiniteDiffStep);
            const double err = std::abs(numeric - grads[t][i]) /
                               std::max(1.0, std::abs(numeric));
            worst = std::max(worst, err);
            EXPECT_NEAR(grads[t][i], numeric, kGradTolerance)
                << h->tensors()[t].name << "[" << i << "]";
        }
    }
    EXPECT_LT(worst, kGradTolerance);
}

TEST(TripletLossTest, EmbeddingGradientsMatchFiniteDifferences) {
    std::mt19937 gen(kSeed);
    const size_t n = 5, d = 3;
    std::vector<float> e = gaussian(n * d, gen);
    std::vector<triplet> ts = {{0, 1, 2}, {3, 4, 0}, {1, 0, 4}};
    const float margin = 10;
    std::vector<float> g(n * d);
    triplet_loss(e.data(), n, d, ts, margin, g.data());
    for (size_t i = 0; i < e.size(); ++i) {
        const float keep = e[i];
        e[i] = keep + kFiniteDiffStep;
        double up = triplet_loss(e.data(), n, d, ts, margin, nullptr).loss;
        e[i] = keep - kFiniteDiffStep;
        double down = triplet_loss(e.data(), n, d, ts, margin, nullptr).loss;
        e[i] = keep;
        EXPECT_NEAR(g[i], (up - down) / (2 * kFiniteDiffStep), 1e-2) << i;
    }
}

TEST(TripletLossTest, InactiveTripletsAddNoLossButCountInTheMean) {
    // 1-D: a=0, p=1, n=3: 1 - 9 + 0.5 < 0; (1, 0, 2) with n=2 at 0.5:
    // d(a,p)=1, d(a,n)=0.25 -> 1.25.
    std::vector<float> e = {0, 1, 3, 0.5f};
    std::vector<triplet> ts = {{0, 1, 2}, {1, 0, 3}};
    triplet_loss_value v = triplet_loss(e.data(), 4, 1, ts, 0.5f, nullptr);
    EXPECT_EQ(v.triplets, 2u);
    EXPECT_EQ(v.active, 1u);
    EXPECT_NEAR(v.loss, 1.25 / 2, 1e-6);
    EXPECT_EQ(triplet_loss(e.data(), 4, 1, {}, 0.5f, nullptr).loss, 0);
}

TEST(HeadTest, OneLayerGradientsMatchFiniteDifferences) {
    expect_head_gradients_match({/*input_dim=*/7, /*hidden_dim=*/0,
                                 /*output_dim=*/4, /*relu=*/true});
}

TEST(HeadTest, TwoLayerReluGradientsMatchFiniteDifferences) {
    expect_head_gradients_match({/*input_dim=*/7, /*hidden_dim=*/5,
                                 /*output_dim=*/4, /*relu=*/true});
}

TEST(HeadTest, TwoLayerLinearGradientsMatchFiniteDifferences) {
    expect_head_gradients_match({/*input_dim=*/6, /*hidden_dim=*/9,
                                 /*output_dim=*/3, /*relu=*/false});
}

TEST(HeadTest, OutputsHaveUnitLength) {
    std::mt19937 gen(kSeed);
    auto h = embedding_head::create({16, 8, 5, true}, kSeed);
    ASSERT_TRUE(h);
    std::vector<float> x = gaussian(3 * 16, gen);
    std::vector<float> y(3 * 5);
    h->embed(x.data(), 3, y.data());
    for (size_t i = 0; i < 3; ++i) {
        float s = 0;
        for (size_t j = 0; j < 5; ++j)
            s += y[i * 5 + j] * y[i * 5 + j];
        EXPECT_NEAR(s, 1.0f, 1e-5f);
    }
}

TEST(HeadTest, IdentityInitStartsAsTheNormalisedInput) {
    std::mt19937 gen(kSeed);
    const size_t n = 3, in = 6, out = 4;
    std::vector<float> x = gaussian(n * in, gen);
    auto h =
        embedding_head::create({in, 0, out, true, head_init::identity}, kSeed);
    ASSERT_TRUE(h) << h.error().to_string();
    std::vector<float> y(n * out);
    h->embed(x.data(), n, y.data());
    for (size_t i = 0; i < n; ++i) {
        double norm = 0;
        for (size_t k = 0; k < out; ++k)
            norm += x[i * in + k] * x[i * in + k];
        for (size_t k = 0; k < out; ++k) {
            EXPECT_NEAR(y[i * out + k], x[i * in + k] / std::sqrt(norm), 1e-6);
        }
    }

    auto two =
        embedding_head::create({in, 5, out, true, head_init::identity}, kSeed);
    ASSERT_FALSE(two);
    EXPECT_EQ(two.error().code(), error_code::invalid_argument);
    EXPECT_THAT(two.error().message(), HasSubstr("identity init needs a "
                                                 "single layer"));
    EXPECT_THAT(parse_head_init("eye").error().message(),
                HasSubstr("'eye' is unknown"));
}

TEST(HeadTest, SaveLoadRoundTripsTensorsAndMetadata) {
    testing::temp_dir dir;
    auto h = embedding_head::create({10, 6, 4, false}, kSeed);
    ASSERT_TRUE(h);
    const std::string path = dir.str("head.fvh");
    ASSERT_TRUE(save_head(path, h.value(), {{"threshold", 0.75}}).is_ok());
    auto back = load_head(path);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(back->head.config().hidden_dim, 6u);
    EXPECT_FALSE(back->head.config().relu);
    EXPECT_EQ(back->metadata["threshold"], 0.75);
    for (size_t t = 0; t < h->tensors().size(); ++t) {
        EXPECT_EQ(back->head.tensors()[t].data, h->tensors()[t].data);
    }
}

TEST(HeadTest, DamagedFilesAreCorruption) {
    testing::temp_dir dir;
    auto h = embedding_head::create({10, 0, 4, true}, kSeed);
    ASSERT_TRUE(h);
    const std::string path = dir.str("head.fvh");
    ASSERT_TRUE(save_head(path, h.value()).is_ok());

    // Flip one byte of the last weight.
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(-1, std::ios::end);
        f.put('\x7f');
    }
    auto flipped = load_head(path);
    ASSERT_FALSE(flipped);
    EXPECT_EQ(flipped.error().code(), error_code::corruption);
    EXPECT_THAT(flipped.error().message(), HasSubstr("checksum"));

    std::ofstream(dir.str("junk.fvh")) << "not a head";
    auto junk = load_head(dir.str("junk.fvh"));
    ASSERT_FALSE(junk);
    EXPECT_THAT(junk.error().message(), HasSubstr("bad magic"));

    auto missing = load_head(dir.str("none.fvh"));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), error_code::not_found);
}

TEST(HeadTest, NanWeightsAreNeverWritten) {
    testing::temp_dir dir;
    auto h = embedding_head::create({4, 0, 2, true}, kSeed);
    ASSERT_TRUE(h);
    h->mutable_tensors()[0].data[3] = std::numeric_limits<float>::quiet_NaN();
    const std::string path = dir.str("nan.fvh");
    status s = save_head(path, h.value());
    EXPECT_EQ(s.code(), error_code::invalid_argument);
    EXPECT_THAT(s.message(), HasSubstr("NaN"));
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(HeadTest, FromTensorsRejectsMismatchedShapes) {
    auto h = embedding_head::create({8, 6, 4, true}, kSeed);
    ASSERT_TRUE(h);
    std::vector<named_tensor> ts = h->tensors();
    ts[2].shape = {4, 5};
    auto bad = embedding_head::from_tensors(ts);
    ASSERT_FALSE(bad);
    EXPECT_THAT(bad.error().message(), HasSubstr("fc2.weight"));
    ts.clear();
    auto none = embedding_head::from_tensors(ts);
    ASSERT_FALSE(none);
    EXPECT_THAT(none.error().message(), HasSubstr("fc1.weight"));
}

// Labels {0, 0, 1, 1}; distances chosen so each rule has one answer.
//   d01 .5  d02 .6  d03 .9  d12 .2  d13 1.5  d23 .3
std::vector<float> four_point_distances() {
    const float d01 = .5f, d02 = .6f, d03 = .9f, d12 = .2f, d13 = 1.5f,
                d23 = .3f;
    return {0,   d01, d02, d03,  //
            d01, 0,   d12, d13,  //
            d02, d12, 0,   d23,  //
            d03, d13, d23, 0};
}

TEST(MiningTest, SemiHardTakesNegativesInsideTheMarginBand) {
    // (0,1): band (.5, .7) holds 2 only. (1,0): band (.5, .7) holds
    // nothing (2 is at .2, 3 at 1.5). (2,3), (3,2): bands (.3, .5) empty.
    std::vector<int> labels = {0, 0, 1, 1};
    auto ts =
        mine_triplets(four_point_distances(), labels, mining::semi_hard, 0.2f);
    EXPECT_THAT(ts, ElementsAre(triplet{0, 1, 2}));
}

TEST(MiningTest, SemiHardPrefersTheNearestNegativeInTheBand) {
    std::vector<int> labels = {0, 0, 1, 1};
    // With margin 1 the band of (0,1) is (.5, 1.5): 2 (.6) beats 3 (.9).
    auto ts =
        mine_triplets(four_point_distances(), labels, mining::semi_hard, 1.0f);
    ASSERT_FALSE(ts.empty());
    EXPECT_EQ(ts[0], (triplet{0, 1, 2}));
    // (1,0): band (.5, 1.5) -> 3 at 1.5 is excluded, 2 at .2 is below.
    for (const triplet &t : ts) {
        EXPECT_FALSE(t.anchor == 1 && t.positive == 0) << t.negative;
    }
}

TEST(MiningTest, BatchHardTakesFarthestPositiveAndNearestNegative) {
    std::vector<int> labels = {0, 0, 1, 1};
    auto ts =
        mine_triplets(four_point_distances(), labels, mining::batch_hard, 0.2f);
    EXPECT_THAT(ts, ElementsAre(triplet{0, 1, 2}, triplet{1, 0, 2},
                                triplet{2, 3, 1}, triplet{3, 2, 0}));

    // Three images of person 0: the farther positive (2) is chosen.
    std::vector<int> three = {0, 0, 0, 1};
    std::vector<float> d = {0,   .1f, .4f, .3f,  //
                            .1f, 0,   .2f, .8f,  //
                            .4f, .2f, 0,   .7f,  //
                            .3f, .8f, .7f, 0};
    auto hard = mine_triplets(d, three, mining::batch_hard, 0.2f);
    ASSERT_FALSE(hard.empty());
    EXPECT_EQ(hard[0], (triplet{0, 2, 3}));
}

TEST(MiningTest, SingleImagePeopleAreOnlyNegatives) {
    // Person 2 (index 4) has one image.
    std::vector<int> labels = {0, 0, 1, 1, 2};
    std::mt19937 gen(kSeed);
    std::vector<float> e = gaussian(5 * 3, gen);
    std::vector<float> d = pairwise_squared_l2(e.data(), 5, 3);
    for (mining m : {mining::semi_hard, mining::batch_hard}) {
        for (const triplet &t : mine_triplets(d, labels, m, 4.0f)) {
            EXPECT_NE(t.anchor, 4u);
            EXPECT_NE(t.positive, 4u);
        }
    }
    EXPECT_TRUE(mine_triplets(d, std::vector<int>{0, 1, 2, 3, 4},
                              mining::batch_hard, 1.0f)
                    .empty());
}

TEST(MiningTest, NamesParseAndUnknownNamesAreRejected) {
    EXPECT_EQ(parse_mining("batch-hard").value(), mining::batch_hard);
    auto bad = parse_mining("hardest");
    ASSERT_FALSE(bad);
    EXPECT_THAT(bad.error().message(), HasSubstr("'hardest'"));
}

TEST(OptimizerTest, SchedulesFollowTheirFormulas) {
    optimizer_config c;
    c.learning_rate = 0.1f;
    c.schedule = lr_schedule::cosine;
    c.min_lr_ratio = 0.01f;
    EXPECT_FLOAT_EQ(scheduled_lr(c, 0, 10), 0.1f);
    EXPECT_FLOAT_EQ(scheduled_lr(c, 5, 10), 0.1f * (0.01f + 0.99f * 0.5f));
    EXPECT_FLOAT_EQ(scheduled_lr(c, 10, 10), 0.001f);
    c.schedule = lr_schedule::step;
    c.step_epochs = 3;
    c.step_gamma = 0.5f;
    EXPECT_FLOAT_EQ(scheduled_lr(c, 2, 10), 0.1f);
    EXPECT_FLOAT_EQ(scheduled_lr(c, 7, 10), 0.025f);
}

TEST(OptimizerTest, SgdAndAdamStepsMatchHandComputedUpdates) {
    std::vector<named_tensor> p = {{"fc1.weight", {2}, {1.0f, -2.0f}},
                                   {"fc1.bias", {1}, {0.5f}}};
    std::vector<std::vector<float>> g = {{0.5f, 0.25f}, {1.0f}};

    optimizer_config sc;
    sc.kind = optimizer_kind::sgd;
    sc.weight_decay = 0.1f;
    sc.momentum = 0.9f;
    optimizer sgd(sc);
    auto q = p;
    sgd.step(q, g, 0.1f);  // w -= lr (g + decay w); bias has no decay
    EXPECT_FLOAT_EQ(q[0].data[0], 1.0f - 0.1f * (0.5f + 0.1f));
    EXPECT_FLOAT_EQ(q[1].data[0], 0.5f - 0.1f * 1.0f);
    sgd.step(q, g, 0.1f);  // momentum: v = 0.9 v + g + decay w
    const float w1 = 1.0f - 0.1f * 0.6f;
    EXPECT_FLOAT_EQ(q[0].data[0], w1 - 0.1f * (0.9f * 0.6f + 0.5f + 0.1f * w1));

    optimizer_config ac;
    ac.weight_decay = 0;
    optimizer adam(ac);
    auto r = p;
    adam.step(r, g, 0.01f);  // first Adam step moves by ~lr * sign(g)
    EXPECT_NEAR(r[0].data[0], 1.0f - 0.01f, 1e-6);
    EXPECT_NEAR(r[0].data[1], -2.0f - 0.01f, 1e-6);
}

TEST(OptimizerTest, BadConfigsAreRejected) {
    optimizer_config c;
    c.learning_rate = -1;
    EXPECT_THAT(validate(c).message(), HasSubstr("learning rate"));
    c = {};
    c.momentum = 1.5f;
    EXPECT_EQ(validate(c).code(), error_code::invalid_argument);
    EXPECT_FALSE(parse_optimizer("rmsprop"));
    EXPECT_FALSE(parse_schedule("linear"));
}

TEST(FeatureCacheTest, ReusesTheFileUntilTheKeyOrListChanges) {
    testing::temp_dir dir;
    int calls = 0;
    feature_fn fn = [&](const std::string &p) -> result<std::vector<float>> {
        ++calls;
        return std::vector<float>{static_cast<float>(p.size()), 1, 2};
    };
    std::vector<std::string> imgs = {"a.jpg", "bb.jpg", "ccc.jpg"};
    const std::string path = dir.str("feat.cache");
    feature_cache_key key{"resnet-abc", "crop 112 rgb"};

    auto first = feature_cache(path, key).get(imgs, fn);
    ASSERT_TRUE(first) << first.error().to_string();
    EXPECT_EQ(calls, 3);
    feature_cache again(path, key);
    auto second = again.get(imgs, fn);
    ASSERT_TRUE(second);
    EXPECT_TRUE(again.last_was_hit());
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(second->data, first->data);
    EXPECT_EQ(second->cols, 3u);

    feature_cache other_backbone(path, {"resnet-xyz", key.preprocessing});
    ASSERT_TRUE(other_backbone.get(imgs, fn));
    EXPECT_EQ(calls, 6);
    EXPECT_THAT(other_backbone.last_miss_reason(), HasSubstr("backbone"));

    feature_cache other_prep(path, {"resnet-xyz", "crop 96"});
    ASSERT_TRUE(other_prep.get(imgs, fn));
    EXPECT_THAT(other_prep.last_miss_reason(), HasSubstr("preprocessing"));

    imgs.push_back("d.jpg");
    feature_cache other_list(path, {"resnet-xyz", "crop 96"});
    ASSERT_TRUE(other_list.get(imgs, fn));
    EXPECT_THAT(other_list.last_miss_reason(), HasSubstr("image list"));
}

TEST(FeatureCacheTest, TruncatedFileIsRecomputed) {
    testing::temp_dir dir;
    int calls = 0;
    feature_fn fn = [&](const std::string &) -> result<std::vector<float>> {
        ++calls;
        return std::vector<float>(4, 1.0f);
    };
    std::vector<std::string> imgs = {"a", "b"};
    const std::string path = dir.str("c");
    ASSERT_TRUE(feature_cache(path, {}).get(imgs, fn));
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
    feature_cache c(path, {});
    ASSERT_TRUE(c.get(imgs, fn));
    EXPECT_FALSE(c.last_was_hit());
    EXPECT_THAT(c.last_miss_reason(), HasSubstr("truncated"));
    EXPECT_EQ(calls, 4);
}

TEST(FeatureCacheTest, ImageErrorsNameTheImage) {
    testing::temp_dir dir;
    feature_fn failing =
        [](const std::string &p) -> result<std::vector<float>> {
        if (p == "bad.jpg")
            return invalid_argument("cannot decode");
        return std::vector<float>{1, 2};
    };
    auto r =
        feature_cache(dir.str("c"), {}).get({"ok.jpg", "bad.jpg"}, failing);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("bad.jpg"));
    EXPECT_THAT(r.error().message(), HasSubstr("cannot decode"));

    feature_fn ragged = [](const std::string &p) -> result<std::vector<float>> {
        return std::vector<float>(p == "a" ? 2 : 3, 0.0f);
    };
    auto r2 = feature_cache(dir.str("c2"), {}).get({"a", "b"}, ragged);
    ASSERT_FALSE(r2);
    EXPECT_THAT(r2.error().message(), HasSubstr("b: features have dim 3"));
}

TEST(FeaturesTest, NpyRoundTripsAndRejectsOtherDtypes) {
    testing::temp_dir dir;
    feature_matrix m{2, 3, {1, 2, 3, 4, 5, 6}};
    ASSERT_TRUE(write_npy(dir.str("m.npy"), m).is_ok());
    auto back = read_npy(dir.str("m.npy"));
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(back->rows, 2u);
    EXPECT_EQ(back->cols, 3u);
    EXPECT_EQ(back->data, m.data);

    std::string f64 = std::string("\x93NUMPY\x01\x00", 8);
    std::string hdr =
        "{'descr': '<f8', 'fortran_order': False, "
        "'shape': (1, 1), }";
    f64 += static_cast<char>(hdr.size());
    f64 += '\0';
    f64 += hdr;
    std::ofstream(dir.str("d.npy"), std::ios::binary) << f64;
    auto bad = read_npy(dir.str("d.npy"));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code(), error_code::unsupported);
    EXPECT_THAT(bad.error().message(), HasSubstr("float32"));
}

TEST(FeaturesTest, FeatureSetRejectsNanRowsAndLabelCountMismatch) {
    feature_matrix m{2, 2, {1, 2, std::numeric_limits<float>::quiet_NaN(), 0}};
    auto r = make_feature_set(m, {"a", "b"});
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("row 1 holds NaN"));
    auto r2 = make_feature_set({2, 2, {1, 2, 3, 4}}, {"a"});
    ASSERT_FALSE(r2);
    EXPECT_THAT(r2.error().message(), HasSubstr("2 rows but 1 labels"));
}

// Synthetic identities: a 16-D identity code per cluster, seen through a
// random linear map into 256-D, plus a strong 64-D nuisance (pose,
// lighting) through another random map. An untrained head mostly sees the
// nuisance; a trained one must learn to project it out.
struct synthetic {
    static constexpr size_t kDim = 256;
    static constexpr size_t kIdentityDim = 16;
    static constexpr size_t kNuisanceDim = 64;
    std::vector<float> identity_map;  // kDim x kIdentityDim
    std::vector<float> nuisance_map;  // kDim x kNuisanceDim
    std::mt19937 gen;

    explicit synthetic(uint32_t seed) : gen(seed) {
        identity_map = gaussian(kDim * kIdentityDim, gen);
        nuisance_map = gaussian(kDim * kNuisanceDim, gen);
    }

    // `clusters` people named prefix<i> with `per` images each.
    feature_set make(const std::string &prefix, size_t clusters, size_t per) {
        feature_matrix m{clusters * per, kDim, {}};
        std::vector<std::string> names;
        for (size_t c = 0; c < clusters; ++c) {
            std::vector<float> center = gaussian(kIdentityDim, gen);
            for (size_t k = 0; k < per; ++k) {
                std::vector<float> id = gaussian(kIdentityDim, gen, 0.3f);
                for (size_t j = 0; j < kIdentityDim; ++j)
                    id[j] += center[j];
                std::vector<float> nu = gaussian(kNuisanceDim, gen, 1.5f);
                for (size_t r = 0; r < kDim; ++r) {
                    float v = 0;
                    for (size_t j = 0; j < kIdentityDim; ++j) {
                        v += identity_map[r * kIdentityDim + j] * id[j];
                    }
                    for (size_t j = 0; j < kNuisanceDim; ++j) {
                        v += nuisance_map[r * kNuisanceDim + j] * nu[j];
                    }
                    m.data.push_back(v / 8);
                }
                names.push_back(prefix + std::to_string(c));
            }
        }
        return make_feature_set(std::move(m), names).value();
    }
};

struct synthetic_task {
    feature_set train;
    validation_set val;
};

synthetic_task make_task() {
    synthetic s(kSeed);
    synthetic_task t;
    t.train = s.make("train", /*clusters=*/50, /*per=*/8);
    // Single-image people only serve as negatives.
    feature_set singles = s.make("single", /*clusters=*/20, /*per=*/1);
    t.train.features.data.insert(t.train.features.data.end(),
                                 singles.features.data.begin(),
                                 singles.features.data.end());
    for (int l : singles.label) {
        t.train.label.push_back(l + static_cast<int>(t.train.persons.size()));
    }
    t.train.features.rows += singles.features.rows;
    t.train.persons.insert(t.train.persons.end(), singles.persons.begin(),
                           singles.persons.end());
    t.val.set = s.make("heldout", /*clusters=*/30, /*per=*/6);
    t.val.pairs = make_validation_pairs(t.val.set, 400, kSeed).value();
    return t;
}

train_config small_config() {
    train_config c;
    c.head = {0, 0, 32, true, head_init::random};
    c.persons_per_batch = 10;
    c.images_per_person = 4;
    c.singletons_per_batch = 4;
    c.epochs = 12;
    c.batches_per_epoch = 10;
    c.patience = 0;
    c.optimizer.learning_rate = 5e-3f;
    c.seed = kSeed;
    return c;
}

TEST(TrainerTest, TrainingSeparatesHeldOutClusters) {
    synthetic_task t = make_task();
    std::vector<size_t> triplets;
    auto r = train_head(
        t.train, t.val, small_config(),
        [&](const batch_event &e) { triplets.push_back(e.triplets); });
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_FALSE(r->epochs.empty());
    EXPECT_EQ(triplets.size(), 12u * 10u);
    const validation_metrics &best = r->epochs[r->best_epoch - 1].validation;
    RecordProperty("untrained_accuracy", std::to_string(r->untrained.accuracy));
    RecordProperty("trained_accuracy", std::to_string(best.accuracy));
    EXPECT_LT(r->untrained.accuracy, 0.8);
    EXPECT_GT(best.accuracy, r->untrained.accuracy + 0.1);
    EXPECT_GT(best.rank1, r->untrained.rank1);
    EXPECT_LT(r->epochs.back().loss, r->epochs.front().loss);
    EXPECT_GT(r->calibration.threshold, 0.0f);
    nlohmann::json rep = report_json(small_config(), r.value());
    EXPECT_EQ(rep["epochs"].size(), r->epochs.size());
    EXPECT_EQ(rep["best_epoch"], r->best_epoch);
}

TEST(TrainerTest, BatchHardMiningAlsoTrains) {
    synthetic_task t = make_task();
    train_config c = small_config();
    c.mining_kind = mining::batch_hard;
    c.epochs = 6;
    auto r = train_head(t.train, t.val, c);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_GT(r->epochs[r->best_epoch - 1].validation.accuracy,
              r->untrained.accuracy + 0.05);
}

TEST(TrainerTest, SameSeedGivesTheSameHead) {
    synthetic_task t = make_task();
    train_config c = small_config();
    c.epochs = 2;
    auto a = train_head(t.train, t.val, c);
    auto b = train_head(t.train, t.val, c);
    c.seed = kSeed + 1;
    auto other = train_head(t.train, t.val, c);
    ASSERT_TRUE(a && b && other);
    for (size_t i = 0; i < a->head.tensors().size(); ++i) {
        EXPECT_EQ(a->head.tensors()[i].data, b->head.tensors()[i].data);
    }
    EXPECT_EQ(a->epochs.back().loss, b->epochs.back().loss);
    EXPECT_NE(a->head.tensors()[0].data, other->head.tensors()[0].data);
}

TEST(TrainerTest, DivergenceStopsTheRunWithAnError) {
    // SGD with lr * weight decay > 2 multiplies the weights by about
    // -(lr * decay) per step until they overflow (batch-hard mining keeps
    // every batch stepping).
    synthetic_task t = make_task();
    train_config c = small_config();
    c.mining_kind = mining::batch_hard;
    c.optimizer.kind = optimizer_kind::sgd;
    c.optimizer.schedule = lr_schedule::constant;
    c.optimizer.learning_rate = 1e3f;
    c.optimizer.weight_decay = 0.1f;
    auto r = train_head(t.train, t.val, c);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::internal);
    EXPECT_THAT(r.error().message(), HasSubstr("training diverged: epoch"));
    EXPECT_THAT(r.error().message(), HasSubstr("NaN or Inf"));
}

TEST(TrainerTest, NonFiniteFeaturesAreRefused) {
    synthetic_task t = make_task();
    t.train.features.data[5 * 256 + 3] = std::numeric_limits<float>::infinity();
    auto r = train_head(t.train, t.val, small_config());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("training row 5"));
}

TEST(TrainerTest, EarlyStoppingKeepsTheBestEpoch) {
    synthetic_task t = make_task();
    train_config c = small_config();
    c.optimizer.learning_rate = 1e-7f;  // no real progress
    c.patience = 2;
    c.epochs = 20;
    auto r = train_head(t.train, t.val, c);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(r->stopped_early);
    EXPECT_LT(r->epochs.size(), 20u);
    const int last = r->epochs.back().epoch;
    EXPECT_EQ(last - r->best_epoch, 2);
}

TEST(TrainerTest, BatchesThatCanNeverHoldTripletsAreRefused) {
    synthetic s(kSeed);
    feature_set singles = s.make("single", 10, 1);
    validation_set val;
    val.set = s.make("val", 4, 3);
    val.pairs = make_validation_pairs(val.set, 10, kSeed).value();
    auto r = train_head(singles, val, small_config());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("no person has >= 2 images"));

    feature_set one = s.make("one", 1, 5);
    auto r1 = train_head(one, val, small_config());
    ASSERT_FALSE(r1);
    EXPECT_THAT(r1.error().message(), HasSubstr("only one person"));

    train_config p1 = small_config();
    p1.persons_per_batch = 1;
    auto r2 = train_head(val.set, val, p1);
    ASSERT_FALSE(r2);
    EXPECT_THAT(r2.error().message(), HasSubstr("P=1"));

    feature_set narrow = s.make("n", 3, 3);
    narrow.features.cols = 128;
    auto r3 = train_head(narrow, val, small_config());
    ASSERT_FALSE(r3);
    EXPECT_THAT(r3.error().message(), HasSubstr("validation dim 256"));
}

TEST(TrainerTest, ValidationPairsAreBalancedAndReproducible) {
    synthetic s(kSeed);
    feature_set set = s.make("p", 5, 4);
    auto a = make_validation_pairs(set, 20, kSeed);
    auto b = make_validation_pairs(set, 20, kSeed);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->a, b->a);
    size_t same = 0;
    for (size_t i = 0; i < a->same.size(); ++i) {
        const bool truly = set.label[a->a[i]] == set.label[a->b[i]];
        EXPECT_EQ(a->same[i] != 0, truly);
        same += a->same[i];
    }
    EXPECT_EQ(same, 20u);
    EXPECT_EQ(a->same.size(), 40u);
}

TEST(TrainerTest, ImpossibleSamplerConfigsAreRefusedBeforeAnyStep) {
    synthetic s(kSeed);
    validation_set val;
    val.set = s.make("val", 4, 3);
    val.pairs = make_validation_pairs(val.set, 10, kSeed).value();
    size_t batches = 0;
    auto count = [&](const batch_event &) { ++batches; };

    train_config k1 = small_config();
    k1.images_per_person = 1;
    auto r = train_head(val.set, val, k1, count);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("K=1"));

    // One person with several images, single-image people available but
    // none drawn into a batch (S = 0): never a negative.
    feature_set one = s.make("one", 1, 5);
    feature_set singles = s.make("single", 3, 1);
    one.features.data.insert(one.features.data.end(),
                             singles.features.data.begin(),
                             singles.features.data.end());
    one.features.rows += singles.features.rows;
    for (int l : singles.label)
        one.label.push_back(l + 1);
    one.persons.insert(one.persons.end(), singles.persons.begin(),
                       singles.persons.end());
    train_config s0 = small_config();
    s0.singletons_per_batch = 0;
    auto r2 = train_head(one, val, s0, count);
    ASSERT_FALSE(r2);
    EXPECT_EQ(r2.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r2.error().message(), HasSubstr("3 available, S=0"));
    EXPECT_THAT(r2.error().message(), HasSubstr("can ever hold a negative"));
    EXPECT_EQ(batches, 0u);

    // The same data with single-image negatives in the batches trains.
    train_config s1 = small_config();
    s1.epochs = 1;
    s1.singletons_per_batch = 2;
    EXPECT_TRUE(train_head(one, val, s1, count));
    EXPECT_GT(batches, 0u);
}

TEST(TrainerTest, BatchesWithoutSemiHardTripletsFallBackToBatchHard) {
    // A margin this thin leaves the semi-hard band (d(a,p), d(a,p) +
    // margin) empty in practically every batch.
    synthetic_task t = make_task();
    train_config c = small_config();
    c.margin = 1e-9f;
    c.epochs = 2;
    size_t fallbacks = 0;
    size_t with_triplets = 0;
    auto r = train_head(t.train, t.val, c, [&](const batch_event &e) {
        fallbacks += e.fallback ? 1 : 0;
        with_triplets += e.triplets > 0 ? 1 : 0;
    });
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_GT(fallbacks, 0u);
    EXPECT_EQ(with_triplets, 2u * 10u);
    size_t reported = 0;
    for (const epoch_record &e : r->epochs) {
        reported += e.fallback_batches;
        EXPECT_EQ(e.batches_without_triplets, 0u);
        EXPECT_GT(e.min_triplets, 0u);
    }
    EXPECT_EQ(reported, fallbacks);
    nlohmann::json rep = report_json(c, r.value());
    EXPECT_TRUE(rep["epochs"][0].contains("semi_hard_fallback_batches"));
    EXPECT_TRUE(rep["epochs"][0].contains("min_triplets_per_batch"));

    // Batch-hard mining never falls back.
    c.mining_kind = mining::batch_hard;
    fallbacks = 0;
    auto rb = train_head(t.train, t.val, c, [&](const batch_event &e) {
        fallbacks += e.fallback ? 1 : 0;
    });
    ASSERT_TRUE(rb);
    EXPECT_EQ(fallbacks, 0u);
}

TEST(TrainerTest, LfwPairsMapToTheRowsHoldingTheirImages) {
    auto pairs = parse_lfw_pairs(
        "2\nAnn\t1\t2\nBob\t2\t1\nAnn\t1\tBob\t2\nCid\t1\tAnn\t2\n",
        "pairs.txt");
    ASSERT_TRUE(pairs) << pairs.error().to_string();
    std::vector<image_ref> rows = {
        {"Bob", 1}, {"Ann", 2}, {"Cid", 1}, {"Ann", 1}, {"Bob", 2}};
    auto v = lfw_validation_pairs(pairs.value(), rows, "pairs.txt");
    ASSERT_TRUE(v) << v.error().to_string();
    EXPECT_THAT(v->a, ElementsAre(3u, 4u, 3u, 2u));
    EXPECT_THAT(v->b, ElementsAre(1u, 0u, 4u, 1u));
    EXPECT_THAT(v->same, ElementsAre(1, 1, 0, 0));

    rows.pop_back();
    auto missing = lfw_validation_pairs(pairs.value(), rows, "pairs.txt");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), error_code::invalid_argument);
    EXPECT_THAT(missing.error().message(),
                HasSubstr("pairs.txt: pair 2 names Bob image 2"));
}

// ---------------------------------------------------------------------
// Real data: LFW and the pretrained backbone.

// People of peopleDevTrain with at least this many images train the
// short real run, each with this many images.
constexpr int kRealImagesPerPerson = 4;
constexpr size_t kRealTrainPeople = 120;
// Pairs of each kind taken from pairsDevTest (it lists 500 of each).
constexpr size_t kRealPairsPerKind = 200;
constexpr int kRealEpochs = 12;
constexpr size_t kRealDim = 32;
constexpr size_t kRealBatchesPerEpoch = 30;
// Least gain in validation accuracy the trained head must show over the
// untrained one on the subset.
constexpr double kRealMinGain = 0.02;

// Features of LFW images through `e`, one row per image, in order.
result<feature_matrix> lfw_features(const embed::embedder &e,
                                    const std::string &faces,
                                    const std::vector<image_ref> &refs) {
    constexpr size_t kChunk = 32;
    feature_matrix m{refs.size(), static_cast<size_t>(e.dim()), {}};
    embed::decode_options dopts;
    dopts.min_side = embed::decode_min_side(e.preprocessing());
    for (size_t i = 0; i < refs.size(); i += kChunk) {
        std::vector<embed::image> images;
        for (size_t j = i; j < std::min(refs.size(), i + kChunk); ++j) {
            auto img = embed::decode_file(faces + "/" + lfw_image_path(refs[j]),
                                          dopts);
            if (!img)
                return img.error();
            images.push_back(std::move(img.value()));
        }
        auto f = e.embed(images);
        if (!f)
            return f.error();
        m.data.insert(m.data.end(), f->begin(), f->end());
    }
    return m;
}

result<feature_set> lfw_feature_set(const embed::embedder &e,
                                    const std::string &faces,
                                    const std::vector<image_ref> &refs) {
    auto m = lfw_features(e, faces, refs);
    if (!m)
        return m.error();
    std::vector<std::string> names;
    for (const image_ref &r : refs)
        names.push_back(r.person);
    return make_feature_set(std::move(m.value()), names);
}

// The face-resnet embedder, or the reason the real-data tests skip.
result<std::unique_ptr<embed::embedder>> load_face_resnet() {
    embed::embedder_options o;
    o.align = "center";
    return embed::embedder::load(embed::kFaceResnet, o);
}

TEST(TrainerRealTest, ShortRunOnAnLfwSubsetBeatsTheUntrainedHead) {
    const std::string faces = testing::faces_dir();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (set FACEVEC_FACES)";
    auto e = load_face_resnet();
    if (!e) {
        GTEST_SKIP() << "face-resnet weights absent (tools/fetch_models.sh): "
                     << e.error().to_string();
    }

    // Training: the first people of peopleDevTrain with enough images.
    auto people = parse_people_file(faces + "/peopleDevTrain.txt");
    ASSERT_TRUE(people) << people.error().to_string();
    std::vector<image_ref> train_refs;
    size_t taken = 0;
    for (const person_count &p : *people) {
        if (p.images < kRealImagesPerPerson || taken == kRealTrainPeople)
            continue;
        ++taken;
        for (int n = 1; n <= kRealImagesPerPerson; ++n)
            train_refs.push_back({p.person, n});
    }

    // Validation: the first pairs of each kind of pairsDevTest, people the
    // head never sees.
    auto all = parse_lfw_pairs_file(faces + "/pairsDevTest.txt");
    ASSERT_TRUE(all) << all.error().to_string();
    lfw_pairs subset;
    std::set<std::pair<std::string, int>> seen;
    std::vector<image_ref> val_refs;
    size_t same = 0, different = 0;
    for (const lfw_pair &p : all->pairs) {
        size_t &count = p.same ? same : different;
        if (count == kRealPairsPerKind)
            continue;
        ++count;
        subset.pairs.push_back(p);
        for (const image_ref &r : {p.a, p.b}) {
            if (seen.insert({r.person, r.number}).second)
                val_refs.push_back(r);
        }
    }

    auto train_set = lfw_feature_set(**e, faces, train_refs);
    ASSERT_TRUE(train_set) << train_set.error().to_string();
    validation_set val;
    auto val_set = lfw_feature_set(**e, faces, val_refs);
    ASSERT_TRUE(val_set) << val_set.error().to_string();
    val.set = std::move(val_set.value());
    auto pairs = lfw_validation_pairs(subset, val_refs, "pairsDevTest.txt");
    ASSERT_TRUE(pairs) << pairs.error().to_string();
    val.pairs = std::move(pairs.value());

    train_config c;
    // A 32-D head: a random projection to it loses much of the backbone's
    // 128-D separation, which training must win back.
    c.head = {0, 0, kRealDim, true, head_init::random};
    c.persons_per_batch = 16;
    c.images_per_person = kRealImagesPerPerson;
    c.epochs = kRealEpochs;
    c.batches_per_epoch = kRealBatchesPerEpoch;
    c.patience = 0;
    c.seed = kSeed;
    auto r = train_head(train_set.value(), val, c);
    ASSERT_TRUE(r) << r.error().to_string();
    const validation_metrics &best = r->epochs[r->best_epoch - 1].validation;
    RecordProperty("untrained_accuracy", std::to_string(r->untrained.accuracy));
    RecordProperty("trained_accuracy", std::to_string(best.accuracy));
    ASSERT_GT(r->best_epoch, 0);
    EXPECT_GT(best.accuracy, r->untrained.accuracy + kRealMinGain)
        << "untrained " << r->untrained.accuracy;
    EXPECT_GT(best.auc, r->untrained.auc) << "untrained " << r->untrained.auc;
}

TEST(ExportedHeadParamsTest, FaceResnetWithoutParamsIsThePlainNetwork) {
    auto plain = embed::describe_model(embed::kFaceResnet, {});
    ASSERT_TRUE(plain) << plain.error().to_string();
    const embed::network_desc reference = embed::face_resnet_network();
    ASSERT_EQ(plain->net.layers.size(), reference.layers.size());
    EXPECT_EQ(plain->net.layers.back().name, "fc");
    EXPECT_FALSE(plain->net.l2_normalize);
    EXPECT_TRUE(embed::face_resnet_params{}.to_json().empty());
}

TEST(ExportedHeadParamsTest, FaceResnetHeadFollowsThe128DOutput) {
    embed::face_resnet_params p;
    p.dim = 8;
    p.hidden = 16;
    auto m = embed::describe_model(embed::kFaceResnet, p.to_json());
    ASSERT_TRUE(m) << m.error().to_string();
    EXPECT_TRUE(m->net.l2_normalize);
    auto shapes = embed::infer_shapes(m->net);
    ASSERT_TRUE(shapes) << shapes.error().to_string();
    EXPECT_EQ(shapes->at(embed::kHeadFc2).channels, 8);
    auto specs = embed::required_weights(m->net);
    ASSERT_TRUE(specs);
    bool fc1 = false;
    for (const embed::weight_spec &w : *specs) {
        if (w.name == std::string(embed::kHeadFc1) + "/weight") {
            fc1 = true;
            EXPECT_THAT(w.shape, ElementsAre(16, 128));
        }
    }
    EXPECT_TRUE(fc1);

    p.hidden = 0;
    auto one = embed::describe_model(embed::kFaceResnet, p.to_json());
    ASSERT_TRUE(one);
    EXPECT_EQ(one->net.layers.size(),
              embed::face_resnet_network().layers.size() + 1);
}

TEST(ExportedHeadParamsTest, BadFaceResnetHeadParamsNameTheKey) {
    auto text = embed::parse_face_resnet_params({{"dim", "eight"}});
    ASSERT_FALSE(text);
    EXPECT_EQ(text.error().code(), error_code::invalid_argument);
    EXPECT_THAT(text.error().message(),
                HasSubstr("face-resnet parameter dim: \"eight\""));
    auto zero = embed::parse_face_resnet_params({{"dim", 0}});
    ASSERT_FALSE(zero);
    EXPECT_THAT(zero.error().message(), HasSubstr("1..65536"));
    auto negative =
        embed::parse_face_resnet_params({{"dim", 8}, {"hidden", -1}});
    ASSERT_FALSE(negative);
    EXPECT_THAT(negative.error().message(), HasSubstr("parameter hidden"));
    auto alone = embed::parse_face_resnet_params({{"hidden", 16}});
    ASSERT_FALSE(alone);
    EXPECT_EQ(alone.error().code(), error_code::invalid_argument);
    EXPECT_THAT(alone.error().message(), HasSubstr("without dim"));
    auto described = embed::describe_model(embed::kFaceResnet, {{"dim", -3}});
    ASSERT_FALSE(described);
    EXPECT_THAT(described.error().message(), HasSubstr("parameter dim"));
}

struct cli_run {
    int code = -1;
    std::string err;  // stderr, then stdout
};

cli_run run_cli(const std::vector<std::string> &args,
                const testing::temp_dir &dir) {
    std::string cmd = testing::facevec_bin();
    for (const std::string &a : args)
        cmd += " '" + a + "'";
    const std::string out = dir.str("cli.out"), err = dir.str("cli.err");
    cmd += " >'" + out + "' 2>'" + err + "'";
    const int rc = std::system(cmd.c_str());
    cli_run r;
    r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    // Read separately: streaming an empty file's rdbuf sets failbit and
    // would drop what follows.
    for (const std::string &path : {err, out}) {
        std::ifstream in(path);
        r.err.append(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
    }
    return r;
}

TEST(TrainerRealTest, ExportedModelEmbedsThroughTheTrainedHead) {
    const std::string faces = testing::faces_dir();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (set FACEVEC_FACES)";
    // VGG16 at its smallest input keeps the backbone cheap; its seeded
    // random base weights make no difference to the plumbing checked.
    constexpr int kInput = 32;
    constexpr int kDim = 8;
    testing::temp_dir dir;
    std::ofstream(dir.str("train.txt"))
        << "George_W_Bush\t4\nColin_Powell\t4\nTony_Blair\t4\n"
           "Donald_Rumsfeld\t4\n";
    std::ofstream(dir.str("val.txt"))
        << "Ariel_Sharon\t3\nHugo_Chavez\t3\nJacques_Chirac\t3\n";
    cli_run r = run_cli({"train",
                         "--faces",
                         faces,
                         "--people-train",
                         dir.str("train.txt"),
                         "--people-val",
                         dir.str("val.txt"),
                         "--backbone",
                         "vgg16",
                         "--input-size",
                         std::to_string(kInput),
                         "--dim",
                         std::to_string(kDim),
                         "--hidden",
                         "0",
                         "--epochs",
                         "2",
                         "--persons-per-batch",
                         "3",
                         "--images-per-person",
                         "2",
                         "--validation-pairs",
                         "6",
                         "--out",
                         dir.str("head.fvh"),
                         "--export-model",
                         dir.str("model.fvw")},
                        dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("sampling 6 genuine"));

    // The CLI's embedding of a photo the head never saw.
    const std::string photo = faces + "/" + lfw_image_path({"Ariel_Sharon", 4});
    cli_run emb = run_cli({"embed", "--model", dir.str("model.fvw"), "--align",
                           "center", "--out", dir.str("e.npy"), photo},
                          dir);
    ASSERT_EQ(emb.code, 0) << emb.err;
    auto cli_vec = read_npy(dir.str("e.npy"));
    ASSERT_TRUE(cli_vec) << cli_vec.error().to_string();
    ASSERT_EQ(cli_vec->rows, 1u);
    EXPECT_EQ(cli_vec->cols, static_cast<size_t>(kDim));

    // Backbone features through the saved head give the same vector.
    embed::embedder_options fo;
    fo.align = "center";
    fo.input_size = kInput;
    fo.output = embed::kVgg16Features;
    auto backbone = embed::embedder::load(embed::kVgg16, fo);
    ASSERT_TRUE(backbone) << backbone.error().to_string();
    embed::decode_options dopts;
    dopts.min_side = embed::decode_min_side((*backbone)->preprocessing());
    auto img = embed::decode_file(photo, dopts);
    ASSERT_TRUE(img);
    auto features = (*backbone)->embed_one(img.value());
    ASSERT_TRUE(features);
    auto head = load_head(dir.str("head.fvh"));
    ASSERT_TRUE(head) << head.error().to_string();
    std::vector<float> expected(kDim);
    head->head.embed(features->data(), 1, expected.data());
    for (int i = 0; i < kDim; ++i)
        EXPECT_NEAR(cli_vec->data[i], expected[i], 1e-4) << i;

    // A new model: its fingerprint differs from the untrained vgg16's.
    embed::embedder_options mo;
    mo.align = "center";
    auto model = embed::embedder::load(dir.str("model.fvw"), mo);
    ASSERT_TRUE(model) << model.error().to_string();
    mo.input_size = kInput;
    auto untrained = embed::embedder::load(embed::kVgg16, mo);
    ASSERT_TRUE(untrained);
    EXPECT_EQ((*model)->dim(), kDim);
    EXPECT_EQ((*model)->input_size(), kInput);
    EXPECT_NE((*model)->fingerprint(), (*untrained)->fingerprint());
}

TEST(TrainerRealTest, ExportedFaceResnetModelEmbedsThroughTheTrainedHead) {
    const std::string faces = testing::faces_dir();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (set FACEVEC_FACES)";
    auto plain = load_face_resnet();
    if (!plain) {
        GTEST_SKIP() << "face-resnet weights absent (tools/fetch_models.sh): "
                     << plain.error().to_string();
    }
    // Two layers, so the head's hidden ReLU layer is exported too.
    constexpr int kDim = 8;
    constexpr int kHidden = 16;
    testing::temp_dir dir;
    std::ofstream(dir.str("train.txt"))
        << "George_W_Bush\t4\nColin_Powell\t4\nTony_Blair\t4\n";
    std::ofstream(dir.str("val.txt")) << "Ariel_Sharon\t3\nHugo_Chavez\t3\n";
    cli_run r = run_cli({"train",
                         "--faces",
                         faces,
                         "--people-train",
                         dir.str("train.txt"),
                         "--people-val",
                         dir.str("val.txt"),
                         "--backbone",
                         "face-resnet",
                         "--dim",
                         std::to_string(kDim),
                         "--hidden",
                         std::to_string(kHidden),
                         "--epochs",
                         "2",
                         "--persons-per-batch",
                         "3",
                         "--images-per-person",
                         "2",
                         "--validation-pairs",
                         "4",
                         "--out",
                         dir.str("head.fvh"),
                         "--export-model",
                         dir.str("model.fvw")},
                        dir);
    ASSERT_EQ(r.code, 0) << r.err;

    // The CLI's embedding of a photo the head never saw, aligned as the
    // training features were (train's default, center).
    const std::string photo = faces + "/" + lfw_image_path({"Ariel_Sharon", 4});
    cli_run emb = run_cli({"embed", "--model", dir.str("model.fvw"), "--align",
                           "center", "--out", dir.str("e.npy"), photo},
                          dir);
    ASSERT_EQ(emb.code, 0) << emb.err;
    auto cli_vec = read_npy(dir.str("e.npy"));
    ASSERT_TRUE(cli_vec) << cli_vec.error().to_string();
    ASSERT_EQ(cli_vec->rows, 1u);
    ASSERT_EQ(cli_vec->cols, static_cast<size_t>(kDim));

    // The plain backbone's 128-D output through the saved head gives the
    // same vector.
    embed::decode_options dopts;
    dopts.min_side = embed::decode_min_side((*plain)->preprocessing());
    auto img = embed::decode_file(photo, dopts);
    ASSERT_TRUE(img);
    auto features = (*plain)->embed_one(img.value());
    ASSERT_TRUE(features) << features.error().to_string();
    auto head = load_head(dir.str("head.fvh"));
    ASSERT_TRUE(head) << head.error().to_string();
    EXPECT_EQ(head->head.config().hidden_dim, static_cast<size_t>(kHidden));
    std::vector<float> expected(kDim);
    head->head.embed(features->data(), 1, expected.data());
    for (int i = 0; i < kDim; ++i)
        EXPECT_NEAR(cli_vec->data[i], expected[i], 1e-4) << i;

    // A new model: normalised, its own dim and fingerprint.
    embed::embedder_options mo;
    mo.align = "center";
    auto model = embed::embedder::load(dir.str("model.fvw"), mo);
    ASSERT_TRUE(model) << model.error().to_string();
    EXPECT_EQ((*model)->architecture(), embed::kFaceResnet);
    EXPECT_EQ((*model)->dim(), kDim);
    EXPECT_TRUE((*model)->normalized());
    EXPECT_EQ((*plain)->dim(), 128);
    EXPECT_FALSE((*plain)->normalized());
    EXPECT_NE((*model)->fingerprint(), (*plain)->fingerprint());

    // Photos enrolled with the file are queried with it too.
    std::ofstream(dir.str("gallery.csv")) << "path,person\n"
                                          << photo << ",Ariel_Sharon\n";
    cli_run enrolled = run_cli(
        {"enroll", "--db", dir.str("db"), "--model", dir.str("model.fvw"),
         "--align", "center", dir.str("gallery.csv")},
        dir);
    ASSERT_EQ(enrolled.code, 0) << enrolled.err;
    cli_run found = run_cli({"query", "--db", dir.str("db"), "--model",
                             dir.str("model.fvw"), photo},
                            dir);
    ASSERT_EQ(found.code, 0) << found.err;
    EXPECT_NE(found.err.find("\"person\":\"Ariel_Sharon\""), std::string::npos)
        << found.err;
}

}  // namespace
}  // namespace facevec::train
