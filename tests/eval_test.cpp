// Evaluation metrics on small hand-made sets whose answers are known by
// construction (planted distances), their edge cases and the LFW protocol
// file parsers.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "train/eval.h"
#include "train/plot.h"

namespace facevec::train {
namespace {

using ::testing::HasSubstr;

constexpr double kTol = 1e-9;

struct planted {
    std::vector<float> d;
    std::vector<uint8_t> same;
    void add(std::vector<float> genuine, std::vector<float> impostors) {
        for (float g : genuine) {
            d.push_back(g);
            same.push_back(1);
        }
        for (float i : impostors) {
            d.push_back(i);
            same.push_back(0);
        }
    }
};

TEST(VerificationTest, PerfectSeparationGivesFullAccuracyAndAuc) {
    planted p;
    p.add({0.1f, 0.2f, 0.3f}, {1.0f, 2.0f, 3.0f});
    auto r = evaluate_verification(p.d, p.same);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_DOUBLE_EQ(r->best_accuracy, 1.0);
    EXPECT_FLOAT_EQ(r->best_threshold, 0.3f);
    EXPECT_DOUBLE_EQ(r->auc, 1.0);
    EXPECT_DOUBLE_EQ(r->accuracy_std, 0.0);
    // 3 impostors cannot measure FAR 1e-2: the point is FAR 0, below 1.0.
    EXPECT_FALSE(r->at_far_1e2.far_resolved);
    EXPECT_LT(r->at_far_1e2.threshold, 1.0f);
    EXPECT_GT(r->at_far_1e2.threshold, 0.99f);
    EXPECT_DOUBLE_EQ(r->at_far_1e2.tar, 1.0);
    EXPECT_DOUBLE_EQ(r->at_far_1e2.far, 0.0);
}

TEST(VerificationTest, AllTiesGiveChanceAccuracyAndHalfAuc) {
    planted p;
    p.add({1, 1}, {1, 1});
    auto r = evaluate_verification(p.d, p.same);
    ASSERT_TRUE(r);
    EXPECT_DOUBLE_EQ(r->best_accuracy, 0.5);
    // Accepting nothing and everything tie; the smaller threshold wins.
    EXPECT_LT(r->best_threshold, 1.0f);
    EXPECT_DOUBLE_EQ(r->auc, 0.5);
    ASSERT_EQ(r->roc.size(), 2u);
    EXPECT_DOUBLE_EQ(r->roc[1].far, 1.0);
    EXPECT_DOUBLE_EQ(r->roc[1].tar, 1.0);
}

TEST(VerificationTest, OverlapPicksTheKnownBestThresholdAndAuc) {
    // Sorted: 1g 2g 2.5i 3g 4g 5i 6i 7i -> best at 4 (7 of 8 right);
    // genuine below impostor in 14 of 16 pairs.
    planted p;
    p.add({1, 2, 3, 4}, {2.5f, 5, 6, 7});
    auto r = evaluate_verification(p.d, p.same);
    ASSERT_TRUE(r);
    EXPECT_FLOAT_EQ(r->best_threshold, 4.0f);
    EXPECT_DOUBLE_EQ(r->best_accuracy, 7.0 / 8.0);
    EXPECT_DOUBLE_EQ(r->auc, 14.0 / 16.0);
}

TEST(VerificationTest, AucGivesHalfCreditToTies) {
    planted p;
    p.add({1, 2}, {2, 3});
    auto r = evaluate_verification(p.d, p.same);
    ASSERT_TRUE(r);
    EXPECT_DOUBLE_EQ(r->auc, 3.5 / 4.0);
}

TEST(VerificationTest, TenFoldChoosesEachThresholdOnTheOtherFolds) {
    // Nine clean folds (genuine {1, 2}, impostors {3, 4}); fold 0 has a
    // genuine pair at 3.5. Fold 0's threshold comes from the clean folds
    // (2), so it scores 3/4; every other fold's threshold stays at 2.
    planted p;
    std::vector<int> fold;
    for (int f = 0; f < 10; ++f) {
        p.add({1, f == 0 ? 3.5f : 2.0f}, {3, 4});
        fold.insert(fold.end(), 4, f);
    }
    auto r = evaluate_verification(p.d, p.same, fold);
    ASSERT_TRUE(r) << r.error().to_string();
    ASSERT_EQ(r->fold_accuracy.size(), 10u);
    EXPECT_DOUBLE_EQ(r->fold_accuracy[0], 0.75);
    EXPECT_FLOAT_EQ(r->fold_threshold[0], 2.0f);
    for (int f = 1; f < 10; ++f) {
        EXPECT_DOUBLE_EQ(r->fold_accuracy[f], 1.0) << "fold " << f;
    }
    EXPECT_NEAR(r->accuracy_mean, 0.975, kTol);
    EXPECT_NEAR(r->accuracy_std, std::sqrt(0.05625 / 9), kTol);
    EXPECT_NEAR(r->accuracy_stderr, std::sqrt(0.05625 / 9) / std::sqrt(10),
                kTol);
}

TEST(VerificationTest, TarAtFarOnAThousandImpostors) {
    // Impostors 1..1000; genuine 0.5, 1.5, ..., 20.5.
    std::vector<float> impostors, genuine;
    for (int i = 1; i <= 1000; ++i)
        impostors.push_back(i);
    for (int i = 0; i <= 20; ++i)
        genuine.push_back(i + 0.5f);
    auto p3 = tar_at_far(genuine, impostors, 1e-3);
    ASSERT_TRUE(p3);
    EXPECT_TRUE(p3->far_resolved);
    EXPECT_DOUBLE_EQ(p3->far, 1e-3);  // only impostor 1 accepted
    EXPECT_LT(p3->threshold, 2.0f);
    EXPECT_DOUBLE_EQ(p3->tar, 2.0 / 21.0);  // 0.5 and 1.5
    auto p2 = tar_at_far(genuine, impostors, 1e-2);
    ASSERT_TRUE(p2);
    EXPECT_DOUBLE_EQ(p2->far, 1e-2);  // impostors 1..10
    EXPECT_DOUBLE_EQ(p2->tar, 11.0 / 21.0);
}

TEST(VerificationTest, TiedImpostorsNeverPushFarAboveTarget) {
    // Ten impostors at 1: accepting any accepts all ten (FAR 0.1), so the
    // threshold for FAR 0.05 must reject them all.
    std::vector<float> impostors(10, 1.0f);
    impostors.resize(100, 5.0f);
    auto t = threshold_at_far(impostors, 0.05);
    ASSERT_TRUE(t);
    EXPECT_LT(t.value(), 1.0f);
    auto t_all = threshold_at_far(impostors, 1.0);
    ASSERT_TRUE(t_all);
    EXPECT_FLOAT_EQ(t_all.value(), 5.0f);
}

TEST(VerificationTest, UnattainableFarFallsBackToZeroAndSaysSo) {
    std::vector<float> impostors = {3, 4, 5};
    std::vector<float> genuine = {1, 3.5f};
    auto p = tar_at_far(genuine, impostors, 1e-3);
    ASSERT_TRUE(p);
    EXPECT_FALSE(p->far_resolved);
    EXPECT_DOUBLE_EQ(p->far, 0.0);
    EXPECT_DOUBLE_EQ(p->tar, 0.5);
}

TEST(VerificationTest, BadInputsAreRejectedWithTheirReason) {
    std::vector<float> d = {1, 2, 3};
    std::vector<uint8_t> s = {1, 0};
    auto r = evaluate_verification(d, s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("3 distances but 2 labels"));

    std::vector<float> nan = {1, std::numeric_limits<float>::quiet_NaN()};
    std::vector<uint8_t> s2 = {1, 0};
    r = evaluate_verification(nan, s2);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("pair 1"));

    std::vector<float> d2 = {1, 2};
    std::vector<uint8_t> all_same = {1, 1};
    r = evaluate_verification(d2, all_same);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("both genuine and impostor"));

    std::vector<float> d4 = {1, 2, 1, 2};
    std::vector<uint8_t> s4 = {1, 0, 1, 0};
    std::vector<int> gap = {0, 0, 2, 2};
    r = evaluate_verification(d4, s4, gap);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("fold 1 has no pairs"));

    std::vector<int> negative = {0, 0, -1, 1};
    r = evaluate_verification(d4, s4, negative);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("fold id -1"));

    std::vector<int> lopsided = {0, 1, 1, 1};
    std::vector<uint8_t> s5 = {1, 1, 0, 0};
    r = evaluate_verification(d4, s5, lopsided);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("other than 1"));
}

TEST(VerificationTest, ThresholdAtFarRejectsBadArguments) {
    std::vector<float> none;
    std::vector<float> some = {1, 2};
    std::vector<float> inf = {1, std::numeric_limits<float>::infinity()};
    auto e1 = threshold_at_far(none, 0.1);
    ASSERT_FALSE(e1);
    EXPECT_THAT(e1.error().message(), HasSubstr("no impostor"));
    auto e2 = threshold_at_far(some, 0.0);
    ASSERT_FALSE(e2);
    EXPECT_THAT(e2.error().message(), HasSubstr("not in (0, 1]"));
    auto e3 = threshold_at_far(some, 1.5);
    ASSERT_FALSE(e3);
    EXPECT_EQ(e3.error().code(), error_code::invalid_argument);
    auto e4 = threshold_at_far(inf, 0.5);
    ASSERT_FALSE(e4);
    EXPECT_THAT(e4.error().message(), HasSubstr("impostor 1"));
}

TEST(PairsFileTest, ParsesViewTwoFoldsInOrder) {
    const std::string text =
        "2\t1\n"
        "Ann\t1\t2\n"
        "Ann\t1\tBob\t3\n"
        "Cid\t2\t4\n"
        "Dee\t1\tEve\t1\n";
    auto r = parse_lfw_pairs(text, "p.txt");
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->folds, 2);
    EXPECT_EQ(r->pairs_per_class, 1);
    ASSERT_EQ(r->pairs.size(), 4u);
    EXPECT_TRUE(r->pairs[0].same);
    EXPECT_EQ(r->pairs[0].b.number, 2);
    EXPECT_FALSE(r->pairs[1].same);
    EXPECT_EQ(r->pairs[1].b.person, "Bob");
    EXPECT_EQ(r->pairs[1].b.number, 3);
    EXPECT_EQ(r->pairs[2].fold, 1);
    EXPECT_EQ(lfw_image_path(r->pairs[2].b), "lfw/Cid/Cid_0004.jpg");
}

TEST(PairsFileTest, ParsesViewOneAsASingleFold) {
    auto r = parse_lfw_pairs("1\nAnn 1 2\nAnn 1 Bob 1\n", "dev.txt");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->folds, 1);
    EXPECT_EQ(r->pairs.size(), 2u);
}

TEST(PairsFileTest, MalformedLinesNameFileAndLine) {
    auto bad_header = parse_lfw_pairs("x y\n", "p.txt");
    ASSERT_FALSE(bad_header);
    EXPECT_EQ(bad_header.error().code(), error_code::invalid_argument);
    EXPECT_THAT(bad_header.error().message(), HasSubstr("p.txt line 1"));

    auto wrong_kind = parse_lfw_pairs("1\nAnn 1 Bob 2\n", "p.txt");
    ASSERT_FALSE(wrong_kind);
    EXPECT_THAT(wrong_kind.error().message(),
                HasSubstr("p.txt line 2: expected a same-person pair"));

    auto bad_number = parse_lfw_pairs("1\nAnn 1 2\nAnn 1 Bob x\n", "p.txt");
    ASSERT_FALSE(bad_number);
    EXPECT_THAT(bad_number.error().message(),
                HasSubstr("p.txt line 3: image number 'x'"));

    auto zero = parse_lfw_pairs("1\nAnn 0 2\nAnn 1 Bob 1\n", "p.txt");
    ASSERT_FALSE(zero);
    EXPECT_THAT(zero.error().message(), HasSubstr("is < 1"));

    auto short_file = parse_lfw_pairs("2\nAnn 1 2\n", "p.txt");
    ASSERT_FALSE(short_file);
    EXPECT_THAT(short_file.error().message(), HasSubstr("after 1 of 4"));

    auto long_file =
        parse_lfw_pairs("1\nAnn 1 2\nAnn 1 Bob 1\nAnn 1 2\n", "p.txt");
    ASSERT_FALSE(long_file);
    EXPECT_THAT(long_file.error().message(),
                HasSubstr("p.txt line 4: more pairs"));

    auto missing = parse_lfw_pairs_file("/nonexistent/pairs.txt");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code(), error_code::not_found);
    EXPECT_THAT(missing.error().message(), HasSubstr("/nonexistent/pairs"));
}

TEST(PairsFileTest, ParsesTheRealLfwFiles) {
    const std::string faces = testing::faces_dir();
    if (faces.empty())
        GTEST_SKIP() << "LFW not found (FACEVEC_FACES)";
    auto v2 = parse_lfw_pairs_file(faces + "/pairs.txt");
    ASSERT_TRUE(v2) << v2.error().to_string();
    EXPECT_EQ(v2->folds, 10);
    EXPECT_EQ(v2->pairs.size(), 6000u);
    EXPECT_TRUE(
        std::filesystem::exists(faces + "/" + lfw_image_path(v2->pairs[0].a)));
    auto v1 = parse_lfw_pairs_file(faces + "/pairsDevTest.txt");
    ASSERT_TRUE(v1);
    EXPECT_EQ(v1->pairs.size(), 1000u);
    auto people = parse_people_file(faces + "/peopleDevTrain.txt");
    ASSERT_TRUE(people);
    EXPECT_EQ(people->size(), 4038u);
}

TEST(PeopleFileTest, SkipsCountLinesAndRejectsBadOnes) {
    auto r = parse_people("2\nAnn 3\nBob 1\n", "people.txt");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->size(), 2u);
    EXPECT_EQ((*r)[0].images, 3);
    auto bad = parse_people("2\nAnn three\n", "people.txt");
    ASSERT_FALSE(bad);
    EXPECT_THAT(bad.error().message(), HasSubstr("people.txt line 2"));
    auto empty = parse_people("3\n", "people.txt");
    ASSERT_FALSE(empty);
    EXPECT_THAT(empty.error().message(), HasSubstr("no people"));
}

TEST(OpenSetTest, SplitUsesFirstFileAsGalleryAndSinglesAsUnknown) {
    std::map<std::string, std::vector<std::string>> files = {
        {"Ann", {"Ann_0002.jpg", "Ann_0001.jpg"}},
        {"Bob", {"Bob_0001.jpg"}},
        {"Cid", {"Cid_0001.jpg", "Cid_0003.jpg", "Cid_0002.jpg"}},
        {"Dee", {}},
    };
    open_set_split s = split_open_set(files);
    ASSERT_EQ(s.gallery.size(), 2u);
    EXPECT_EQ(s.gallery[0].file, "Ann_0001.jpg");
    EXPECT_EQ(s.gallery[1].file, "Cid_0001.jpg");
    ASSERT_EQ(s.known.size(), 3u);
    EXPECT_EQ(s.known[0].file, "Ann_0002.jpg");
    EXPECT_EQ(s.known[2].file, "Cid_0003.jpg");
    ASSERT_EQ(s.unknown.size(), 1u);
    EXPECT_EQ(s.unknown[0].person, "Bob");
}

TEST(OpenSetTest, PlantedDistancesGiveKnownRanksAndDir) {
    // Two gallery persons. Probe 0 (person 0) is rank 1 at 0.1; probe 1
    // (person 1) is rank 2; probe 2 (person 1) is rank 1 at 0.4.
    std::vector<float> known = {0.1f, 0.5f, 0.2f, 0.3f, 0.9f, 0.4f};
    std::vector<int> truth = {0, 1, 1};
    // 100 unknown probes: nearest distances 0.35, 0.45, then >= 1.
    std::vector<float> unknown;
    for (int i = 0; i < 100; ++i) {
        float v = i == 0 ? 0.35f : (i == 1 ? 0.45f : 1.0f + i);
        unknown.push_back(v + 1);
        unknown.push_back(v);
    }
    auto r = evaluate_open_set(known, truth, unknown, 2);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_DOUBLE_EQ(r->rank1, 2.0 / 3.0);
    EXPECT_DOUBLE_EQ(r->rank5, 1.0);
    // FAR 1%: one unknown (0.35) may pass; threshold just below 0.45.
    EXPECT_DOUBLE_EQ(r->at_far_1e2.threshold.far, 0.01);
    EXPECT_DOUBLE_EQ(r->at_far_1e2.dir, 2.0 / 3.0);
    // FAR 0.1% is below 1/100: threshold just below 0.35, probe 2 fails.
    EXPECT_FALSE(r->at_far_1e3.threshold.far_resolved);
    EXPECT_DOUBLE_EQ(r->at_far_1e3.dir, 1.0 / 3.0);
}

TEST(OpenSetTest, TiesCountAgainstTheTruePerson) {
    std::vector<float> known = {0.5f, 0.5f};
    std::vector<int> truth = {0};
    std::vector<float> unknown = {1, 1};
    auto r = evaluate_open_set(known, truth, unknown, 2);
    ASSERT_TRUE(r);
    EXPECT_DOUBLE_EQ(r->rank1, 0.0);
    EXPECT_DOUBLE_EQ(r->rank5, 1.0);
}

TEST(OpenSetTest, BadInputsAreRejected) {
    std::vector<float> known = {0.5f, 0.6f};
    std::vector<int> truth = {2};
    std::vector<float> unknown = {1, 1};
    auto r = evaluate_open_set(known, truth, unknown, 2);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("truth 2 outside [0, 2)"));

    std::vector<int> ok_truth = {0};
    std::vector<float> none;
    r = evaluate_open_set(known, ok_truth, none, 2);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);

    std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN(), 1};
    r = evaluate_open_set(nan, ok_truth, unknown, 2);
    ASSERT_FALSE(r);
    EXPECT_THAT(r.error().message(), HasSubstr("known probe 0"));
}

TEST(OpenSetTest, NearestPerPersonTakesTheClosestEntry) {
    // Person 0 at (0,0) and (10,0); person 1 at (0,3); person 2 none.
    std::vector<float> gallery = {0, 0, 10, 0, 0, 3};
    std::vector<int> who = {0, 0, 1};
    std::vector<float> probe = {9, 0};
    std::vector<float> d = nearest_per_person(gallery, who, 3, probe, 2);
    ASSERT_EQ(d.size(), 3u);
    EXPECT_FLOAT_EQ(d[0], 1.0f);
    EXPECT_FLOAT_EQ(d[1], 90.0f);
    EXPECT_TRUE(std::isinf(d[2]));
}

TEST(PlotTest, DrawsAVerificationPng) {
    planted p;
    p.add({1, 2, 3, 4}, {2.5f, 5, 6, 7});
    auto r = evaluate_verification(p.d, p.same);
    ASSERT_TRUE(r);
    testing::temp_dir dir;
    const std::string png = dir.str("roc.png");
    status s = draw_plot(verification_plot_data(p.d, p.same, r.value()), png);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    std::ifstream in(png, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG");
}

TEST(PlotTest, MissingScriptIsNotFound) {
    status s = draw_plot(nlohmann::json::object(), "/tmp/x.png",
                         "/nonexistent/plot.py");
    EXPECT_EQ(s.code(), error_code::not_found);
    EXPECT_THAT(s.message(), HasSubstr("/nonexistent/plot.py"));
}

}  // namespace
}  // namespace facevec::train
