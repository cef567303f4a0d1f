// The engine: enroll, query, remove and threshold through the C++ API,
// with a real store and index in a temporary folder.
#include "api/engine.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace facevec {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kDim = 8;

// A vector whose component `axis` is `value`, the rest 0.
std::vector<float> axis_vector(size_t axis, float value = 1.0f) {
    std::vector<float> v(kDim, 0.0f);
    v[axis % kDim] = value;
    return v;
}

enroll_item item(std::string person, std::vector<float> v,
                 std::string hash = "") {
    return {std::move(person), std::move(v), "test", std::move(hash)};
}

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class EngineTest : public ::testing::Test {
  protected:
    std::unique_ptr<engine> create(float threshold = 0,
                                   bool normalized = false) {
        engine_options o;
        o.create_if_missing = true;
        o.meta.dim = kDim;
        o.meta.threshold = threshold;
        o.meta.normalized = normalized;
        auto e = engine::open(db_, o);
        EXPECT_TRUE(e.is_ok()) << e.error().to_string();
        return e.is_ok() ? std::move(e).value() : nullptr;
    }

    std::unique_ptr<engine> reopen() {
        auto e = engine::open(db_, engine_options{});
        EXPECT_TRUE(e.is_ok()) << e.error().to_string();
        return e.is_ok() ? std::move(e).value() : nullptr;
    }

    testing::temp_dir dir_;
    std::string db_ = dir_.str("db");
};

TEST_F(EngineTest, EnrolledFacesAreFoundAfterReopen) {
    {
        auto e = create();
        ASSERT_TRUE(e);
        std::vector<enroll_item> items = {item("ann", axis_vector(0)),
                                          item("bob", axis_vector(1))};
        auto r = e->enroll(items);
        ASSERT_TRUE(r.is_ok()) << r.error().to_string();
        EXPECT_EQ(r->ids.size(), 2u);
        EXPECT_THAT(r->enrolled, ::testing::ElementsAre(0u, 1u));
    }
    auto e = reopen();
    ASSERT_TRUE(e);
    EXPECT_EQ(e->stats().faces, 2u);
    EXPECT_EQ(e->stats().indexed, 2u);

    std::vector<float> q = axis_vector(1, 0.9f);
    auto a = e->query(q.data(), 1, 2);
    ASSERT_TRUE(a.is_ok()) << a.error().to_string();
    ASSERT_EQ((*a)[0].person, std::optional<std::string>("bob"));
    EXPECT_NEAR((*a)[0].distance, 0.01f, 1e-6);
    ASSERT_EQ((*a)[0].top.size(), 2u);
    EXPECT_EQ((*a)[0].top[1].person, "ann");
}

TEST_F(EngineTest, InvalidItemsAreReportedOneByOneAndTheRestEnrolled) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<float> nan_v = axis_vector(0);
    nan_v[3] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> inf_v = axis_vector(0);
    inf_v[5] = std::numeric_limits<float>::infinity();
    std::vector<enroll_item> items = {
        item("ok", axis_vector(0)),
        item("short", std::vector<float>(kDim - 1, 0.0f)),
        item("nan", nan_v),
        item("inf", inf_v),
        item("", axis_vector(1)),
        item(std::string(storage::kMaxLabelBytes + 1, 'x'), axis_vector(2)),
        item("bad\xff utf8", axis_vector(3)),
        item("also ok", axis_vector(4)),
    };
    auto r = e->enroll(items);
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    EXPECT_THAT(r->enrolled, ::testing::ElementsAre(0u, 7u));
    ASSERT_EQ(r->errors.size(), 6u);

    std::map<size_t, std::string> why;
    for (const item_error &err : r->errors) {
        EXPECT_EQ(err.error.code(), error_code::invalid_argument);
        EXPECT_THAT(err.error.message(),
                    HasSubstr("item " + std::to_string(err.item)));
        why[err.item] = err.error.message();
    }
    EXPECT_THAT(why[1], HasSubstr("7 values, the database's dim is 8"));
    EXPECT_THAT(why[1], HasSubstr("person \"short\""));
    EXPECT_THAT(why[2], HasSubstr("NaN at component 3"));
    EXPECT_THAT(why[3], HasSubstr("Inf at component 5"));
    EXPECT_THAT(why[4], HasSubstr("empty"));
    EXPECT_THAT(why[5], HasSubstr("256"));
    EXPECT_THAT(why[6], HasSubstr("UTF-8"));
    EXPECT_EQ(e->stats().faces, 2u);
}

// Finite but huge components would overflow the squared distances to
// Inf; a huge bad label is quoted shortened, not echoed whole.
TEST_F(EngineTest, HugeComponentsAndHugeLabelsAreRefusedBriefly) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<float> huge = axis_vector(0);
    huge[2] = 3e38F;
    const std::string long_label(100000, 'y');
    std::vector<enroll_item> items = {item("ann", huge),
                                      item(long_label, axis_vector(1))};
    auto r = e->enroll(items);
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    EXPECT_TRUE(r->enrolled.empty());
    ASSERT_EQ(r->errors.size(), 2u);
    EXPECT_THAT(r->errors[0].error.message(),
                HasSubstr("component 2 is 3e+38, beyond +-1e+15"));
    const std::string &why = r->errors[1].error.message();
    EXPECT_THAT(
        why, HasSubstr("\"" + std::string(64, 'y') + "\"... (100000 bytes)"));
    EXPECT_LT(why.size(), 300u) << why.substr(0, 300);

    // A query is held to the same bound.
    auto q = e->query(huge.data(), 1, 1);
    ASSERT_FALSE(q.is_ok());
    EXPECT_THAT(q.error().message(), HasSubstr("component 2"));
}

TEST_F(EngineTest, StrictRefusesTheWholeBatchNamingTheBadItem) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<float> nan_v = axis_vector(0);
    nan_v[0] = std::numeric_limits<float>::quiet_NaN();
    std::vector<enroll_item> items = {item("ann", axis_vector(0)),
                                      item("bob", nan_v)};
    auto r = e->enroll(items, /*strict=*/true);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.error().code(), error_code::invalid_argument);
    EXPECT_THAT(r.error().message(), HasSubstr("item 1"));
    EXPECT_THAT(r.error().message(), HasSubstr("bob"));
    EXPECT_EQ(e->stats().faces, 0u);
}

TEST_F(EngineTest, ItemsWithAKnownContentHashAreSkipped) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<enroll_item> first = {item("ann", axis_vector(0), "h1")};
    ASSERT_TRUE(e->enroll(first).is_ok());

    std::vector<enroll_item> again = {
        item("ann", axis_vector(0), "h1"),  // in the store
        item("bob", axis_vector(1), "h1"),  // other person: enrolled
        item("bob", axis_vector(1), "h1"),  // earlier in this batch
        item("ann", axis_vector(2), "h2"),
    };
    auto r = e->enroll(again);
    ASSERT_TRUE(r.is_ok()) << r.error().to_string();
    EXPECT_THAT(r->skipped, ::testing::ElementsAre(0u, 2u));
    EXPECT_THAT(r->enrolled, ::testing::ElementsAre(1u, 3u));
    EXPECT_EQ(e->stats().faces, 3u);
}

TEST_F(EngineTest, TopKHasOnePersonEachNearestFirst) {
    auto e = create();
    ASSERT_TRUE(e);
    // ann has five faces near the query; bob and cy one each, farther.
    std::vector<enroll_item> items;
    for (int i = 0; i < 5; ++i) {
        items.push_back(item("ann", axis_vector(0, 1.0f + 0.01f * i)));
    }
    items.push_back(item("bob", axis_vector(0, 2.0f)));
    items.push_back(item("cy", axis_vector(0, 3.0f)));
    ASSERT_TRUE(e->enroll(items).is_ok());

    std::vector<float> q = axis_vector(0, 1.0f);
    auto a = e->query(q.data(), 1, 3);
    ASSERT_TRUE(a.is_ok());
    const auto &top = (*a)[0].top;
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0].person, "ann");
    EXPECT_EQ(top[1].person, "bob");
    EXPECT_EQ(top[2].person, "cy");
    EXPECT_FLOAT_EQ(top[0].distance, 0.0f);
    EXPECT_FLOAT_EQ(top[1].distance, 1.0f);
    EXPECT_FLOAT_EQ(top[2].distance, 4.0f);
}

TEST_F(EngineTest, QueryFartherThanTheThresholdIsUnknown) {
    auto e = create(/*threshold=*/0.5f);
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {item("ann", axis_vector(0))};
    ASSERT_TRUE(e->enroll(items).is_ok());

    std::vector<float> near = axis_vector(0, 1.5f);  // distance 0.25
    std::vector<float> far = axis_vector(0, 2.0f);   // distance 1
    auto a = e->query(near.data(), 1, 1);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::optional<std::string>("ann"));

    a = e->query(far.data(), 1, 1);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::nullopt);
    EXPECT_FLOAT_EQ((*a)[0].distance, 1.0f);
    ASSERT_EQ((*a)[0].top.size(), 1u);  // still shows the nearest
    EXPECT_EQ((*a)[0].top[0].person, "ann");

    // A per-query threshold overrides the database's.
    a = e->query(far.data(), 1, 1, /*threshold=*/2.0f);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::optional<std::string>("ann"));
    a = e->query(near.data(), 1, 1, /*threshold=*/0.1f);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::nullopt);
}

TEST_F(EngineTest, UnsetThresholdNeverRejects) {
    auto e = create(/*threshold=*/0);
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {item("ann", axis_vector(0))};
    ASSERT_TRUE(e->enroll(items).is_ok());
    std::vector<float> far = axis_vector(1, 100.0f);
    auto a = e->query(far.data(), 1, 1);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::optional<std::string>("ann"));
}

TEST_F(EngineTest, SetThresholdPersistsAndRejectsBadValues) {
    {
        auto e = create();
        ASSERT_TRUE(e);
        ASSERT_TRUE(e->set_threshold(0.75f).is_ok());
        status st = e->set_threshold(-1.0f);
        EXPECT_EQ(st.code(), error_code::invalid_argument);
        EXPECT_THAT(st.message(), HasSubstr(">= 0"));
        st = e->set_threshold(std::numeric_limits<float>::quiet_NaN());
        EXPECT_EQ(st.code(), error_code::invalid_argument);
    }
    auto e = reopen();
    ASSERT_TRUE(e);
    EXPECT_FLOAT_EQ(e->stats().threshold, 0.75f);
}

TEST_F(EngineTest, EmptyDatabaseAnswersUnknownWithNoMatches) {
    auto e = create(/*threshold=*/1.0f);
    ASSERT_TRUE(e);
    std::vector<float> q = axis_vector(0);
    auto a = e->query(q.data(), 1, 3);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].person, std::nullopt);
    EXPECT_TRUE((*a)[0].top.empty());
}

TEST_F(EngineTest, QueryRejectsBadKThresholdAndNonFiniteValues) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<float> qs = axis_vector(0);
    std::vector<float> second = axis_vector(1);
    second[2] = std::numeric_limits<float>::infinity();
    qs.insert(qs.end(), second.begin(), second.end());

    for (int k : {0, -1, kMaxTopK + 1}) {
        auto a = e->query(qs.data(), 1, k);
        ASSERT_FALSE(a.is_ok()) << k;
        EXPECT_EQ(a.error().code(), error_code::invalid_argument);
        EXPECT_THAT(a.error().message(), HasSubstr("k = " + std::to_string(k)));
    }
    auto a = e->query(qs.data(), 2, 1);
    ASSERT_FALSE(a.is_ok());
    EXPECT_EQ(a.error().code(), error_code::invalid_argument);
    EXPECT_THAT(a.error().message(), HasSubstr("query 1: Inf at component 2"));

    a = e->query(qs.data(), 1, 1, /*threshold=*/-1.0f);
    ASSERT_FALSE(a.is_ok());
    EXPECT_THAT(a.error().message(), HasSubstr("threshold"));
}

TEST_F(EngineTest, RemovedPersonIsNoLongerFound) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {item("ann", axis_vector(0)),
                                      item("ann", axis_vector(0, 1.1f)),
                                      item("bob", axis_vector(0, 3.0f))};
    ASSERT_TRUE(e->enroll(items).is_ok());

    auto n = e->remove_person("ann");
    ASSERT_TRUE(n.is_ok()) << n.error().to_string();
    EXPECT_EQ(*n, 2u);
    std::vector<float> q = axis_vector(0);
    auto a = e->query(q.data(), 1, 5);
    ASSERT_TRUE(a.is_ok());
    ASSERT_EQ((*a)[0].top.size(), 1u);
    EXPECT_EQ((*a)[0].top[0].person, "bob");
    EXPECT_EQ(e->stats().faces, 1u);
    EXPECT_EQ(e->stats().indexed, 1u);

    auto again = e->remove_person("ann");
    ASSERT_FALSE(again.is_ok());
    EXPECT_EQ(again.error().code(), error_code::not_found);
    EXPECT_THAT(again.error().message(), HasSubstr("ann"));
}

TEST_F(EngineTest, RemovedFaceIsNoLongerFound) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {item("ann", axis_vector(0)),
                                      item("ann", axis_vector(1))};
    auto r = e->enroll(items);
    ASSERT_TRUE(r.is_ok());
    ASSERT_TRUE(e->remove_face(r->ids[0]).is_ok());

    std::vector<float> q = axis_vector(0);
    auto a = e->query(q.data(), 1, 1);
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ((*a)[0].top[0].face, r->ids[1]);

    status st = e->remove_face(r->ids[0]);
    EXPECT_EQ(st.code(), error_code::not_found);
    EXPECT_THAT(st.message(), HasSubstr(std::to_string(r->ids[0])));
}

TEST_F(EngineTest, NormalizedDatabaseNormalizesFacesAndQueries) {
    auto e = create(/*threshold=*/0, /*normalized=*/true);
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {item("ann", axis_vector(0, 5.0f)),
                                      item("zero", std::vector<float>(kDim))};
    auto r = e->enroll(items);
    ASSERT_TRUE(r.is_ok());
    ASSERT_EQ(r->errors.size(), 1u);
    EXPECT_THAT(r->errors[0].error.message(), HasSubstr("all zeros"));

    auto stored = e->store().get_face(r->ids[0]);
    ASSERT_TRUE(stored.has_value());
    EXPECT_FLOAT_EQ(stored->embedding[0], 1.0f);

    std::vector<float> q = axis_vector(0, 0.25f);
    auto a = e->query(q.data(), 1, 1);
    ASSERT_TRUE(a.is_ok());
    EXPECT_NEAR((*a)[0].distance, 0.0f, 1e-6);
}

TEST_F(EngineTest, OpeningAMissingDatabaseIsNotFound) {
    auto e = engine::open(db_, engine_options{});
    ASSERT_FALSE(e.is_ok());
    EXPECT_EQ(e.error().code(), error_code::not_found);
    EXPECT_THAT(e.error().message(), HasSubstr(db_));
}

TEST_F(EngineTest, OpeningWithAnotherDimIsAMismatch) {
    ASSERT_TRUE(create());
    engine_options o;
    o.meta.dim = kDim + 1;
    auto e = engine::open(db_, o);
    ASSERT_FALSE(e.is_ok());
    EXPECT_EQ(e.error().code(), error_code::mismatch);
}

TEST_F(EngineTest, ListPersonsPagesInLabelOrder) {
    auto e = create();
    ASSERT_TRUE(e);
    std::vector<enroll_item> items = {
        item("cy", axis_vector(0)), item("ann", axis_vector(1)),
        item("bob", axis_vector(2)), item("ann", axis_vector(3))};
    ASSERT_TRUE(e->enroll(items).is_ok());

    auto page = e->list_persons("", 2);
    ASSERT_EQ(page.size(), 2u);
    EXPECT_EQ(page[0], std::make_pair(std::string("ann"), uint64_t{2}));
    EXPECT_EQ(page[1].first, "bob");
    page = e->list_persons("bob", 2);
    ASSERT_EQ(page.size(), 1u);
    EXPECT_EQ(page[0].first, "cy");
    EXPECT_EQ(e->stats().persons, 3u);
}

// Readers search while a writer adds batches of kBatch persons: every
// answer holds whole batches only.
TEST_F(EngineTest, ConcurrentQueriesNeverSeeAPartialBatch) {
    constexpr int kBatches = 200;
    constexpr int kBatch = 10;
    constexpr int kReaders = 3;
    auto e = create();
    ASSERT_TRUE(e);

    std::atomic<bool> done{false};
    std::atomic<int> partial{0};
    std::atomic<int> answers{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < kReaders; ++t) {
        readers.emplace_back([&] {
            std::vector<float> q(kDim, 0.0f);
            while (!done) {
                auto a = e->query(q.data(), 1, kBatches * kBatch);
                if (!a.is_ok()) {
                    ++partial;
                    continue;
                }
                std::map<std::string, int> per_batch;
                for (const match &m : (*a)[0].top) {
                    ++per_batch[m.person.substr(0, m.person.find('-'))];
                }
                for (const auto &[batch, count] : per_batch) {
                    if (count != kBatch)
                        ++partial;
                }
                ++answers;
            }
        });
    }
    while (answers == 0)
        std::this_thread::yield();
    int answers_before = answers;
    for (int b = 0; b < kBatches; ++b) {
        std::vector<enroll_item> items;
        for (int i = 0; i < kBatch; ++i) {
            items.push_back(
                item("b" + std::to_string(b) + "-" + std::to_string(i),
                     axis_vector(size_t(i), float(b * kBatch + i + 1))));
        }
        ASSERT_TRUE(e->enroll(items).is_ok());
    }
    done = true;
    for (auto &t : readers)
        t.join();
    EXPECT_EQ(partial, 0);
    EXPECT_GT(answers, answers_before);  // readers overlapped the writer
    EXPECT_EQ(e->stats().faces, uint64_t(kBatches * kBatch));
}

}  // namespace
}  // namespace facevec
