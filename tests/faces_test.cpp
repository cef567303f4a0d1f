// The photo commands end to end on real faces: enroll from a manifest and
// from person folders, query with images, remove a person, resume an
// enrollment, and a folder of bad files. Runs the real facevec program on
// a few dozen LFW people; skipped when LFW is absent.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace facevec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr int kExitSomeFailed = 3;
constexpr size_t kPeople = 20;
// LFW's hard cases (profile views, old photos) make a few probes miss at
// rank 1 even with alignment; the pipeline measured 0.93 rank-1 on the
// whole open set, so 16 of 20 leaves room without hiding a broken one
// (a broken pipeline scores near chance, 1 in 20).
constexpr size_t kMinRank1 = 16;

struct run_result {
    int code = -1;
    std::string out;
    std::string err;
};

std::string read_all(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string quote(const std::string &arg) {
    std::string q = "'";
    for (char c : arg)
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

run_result run_facevec(const std::vector<std::string> &args,
                       const testing::temp_dir &tmp) {
    std::string cmd = quote(testing::facevec_bin());
    for (const auto &a : args)
        cmd += " " + quote(a);
    std::string out = tmp.str("stdout.txt"), err = tmp.str("stderr.txt");
    cmd += " >" + quote(out) + " 2>" + quote(err);
    int status = std::system(cmd.c_str());
    run_result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_all(out);
    r.err = read_all(err);
    return r;
}

std::vector<json> json_lines(const std::string &text) {
    std::vector<json> out;
    std::stringstream s(text);
    for (std::string line; std::getline(s, line);) {
        if (!line.empty())
            out.push_back(json::parse(line));
    }
    return out;
}

// The first kPeople LFW people (by name) with three or more images: the
// first two are enrolled, the third is the probe.
struct lfw_sample {
    std::vector<std::string> people;
    std::map<std::string, std::vector<std::string>> images;
};

lfw_sample pick_people(const std::string &faces) {
    std::vector<fs::path> dirs;
    for (auto &e : fs::directory_iterator(fs::path(faces) / "lfw")) {
        dirs.push_back(e.path());
    }
    std::sort(dirs.begin(), dirs.end());
    lfw_sample s;
    for (auto &d : dirs) {
        std::vector<std::string> files;
        for (auto &f : fs::directory_iterator(d)) {
            files.push_back(f.path().string());
        }
        if (files.size() < 3)
            continue;
        std::sort(files.begin(), files.end());
        files.resize(3);
        std::string person = d.filename().string();
        s.people.push_back(person);
        s.images[person] = files;
        if (s.people.size() == kPeople)
            break;
    }
    return s;
}

class FacesTest  // NOLINT(readability-identifier-naming)
    : public ::testing::Test {
  protected:
    void SetUp() override {
        faces_ = testing::faces_dir();
        if (faces_.empty()) {
            GTEST_SKIP() << "LFW not found (set FACEVEC_FACES or put it at "
                            "../shared/faces): skipping the photo tests";
        }
        sample_ = pick_people(faces_);
        ASSERT_EQ(sample_.people.size(), kPeople);
    }

    // A manifest of every person's first two images.
    std::string write_manifest() {
        std::string path = tmp_.str("gallery.csv");
        std::ofstream f(path);
        f << "path,person\n";
        for (auto &p : sample_.people) {
            f << sample_.images[p][0] << "," << p << "\n";
            f << sample_.images[p][1] << "," << p << "\n";
        }
        return path;
    }

    std::string faces_;
    lfw_sample sample_;
    testing::temp_dir tmp_;
};

TEST_F(FacesTest, EnrollQueryRemoveAndResume) {
    std::string db = tmp_.str("db");
    std::string manifest = write_manifest();

    auto r = run_facevec({"enroll", "--db", db, "--faces", "central", manifest},
                         tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("enrolled 40, skipped 0"));

    // Each probe's nearest person is, in nearly every case, its own.
    std::vector<std::string> probes;
    for (auto &p : sample_.people)
        probes.push_back(sample_.images[p][2]);
    std::vector<std::string> args = {"query", "--db", db,
                                     "-k",    "3",    "--largest"};
    args.insert(args.end(), probes.begin(), probes.end());
    r = run_facevec(args, tmp_);
    // A probe without a detectable face is listed on stderr (exit 3); the
    // others are answered in input order.
    ASSERT_TRUE(r.code == 0 || r.code == kExitSomeFailed) << r.err;
    auto answers = json_lines(r.out);
    size_t no_face = 0;
    for (size_t at = 0;
         (at = r.err.find("no face found", at)) != std::string::npos; ++at) {
        ++no_face;
    }
    ASSERT_EQ(answers.size() + no_face, kPeople) << r.out << r.err;
    EXPECT_EQ(r.code == 0, no_face == 0);
    size_t right = 0;
    for (const json &a : answers) {
        auto it = std::find(probes.begin(), probes.end(), a["input"]);
        ASSERT_NE(it, probes.end()) << a;
        ASSERT_EQ(a["box"].size(), 4u);
        EXPECT_LT(a["box"][0].get<double>(), a["box"][2].get<double>());
        ASSERT_FALSE(a["top"].empty());
        EXPECT_LE(a["top"].size(), 3u);
        right += a["top"][0]["person"] == sample_.people[it - probes.begin()];
    }
    EXPECT_GE(right, kMinRank1);

    // A removed person is never answered again.
    ASSERT_FALSE(answers.empty());
    const std::string probe = answers[0]["input"];
    const std::string gone = answers[0]["top"][0]["person"];
    r = run_facevec({"remove", "--db", db, "--person", gone}, tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    r = run_facevec({"query", "--db", db, "--largest", probe}, tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    answers = json_lines(r.out);
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_NE(answers[0]["person"], gone);
    for (auto &t : answers[0]["top"])
        EXPECT_NE(t["person"], gone);

    // Enrolling the same manifest again skips what is there and puts the
    // removed person back.
    r = run_facevec({"enroll", "--db", db, "--faces", "central", manifest},
                    tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("enrolled 2, skipped 38"));
}

TEST_F(FacesTest, BadFilesAreListedAndTheGoodOnesEnrolled) {
    // Two people in folders, each with two good photos, plus bad files.
    fs::path root = tmp_.path() / "photos";
    for (size_t i = 0; i < 2; ++i) {
        const auto &p = sample_.people[i];
        fs::create_directories(root / p);
        for (size_t j = 0; j < 2; ++j) {
            fs::copy_file(sample_.images[p][j],
                          root / p / fs::path(sample_.images[p][j]).filename());
        }
    }
    const auto &p0 = sample_.people[0];
    std::string jpeg = read_all(sample_.images[p0][2]);
    std::ofstream(root / p0 / "truncated.jpg", std::ios::binary)
        << jpeg.substr(0, jpeg.size() / 3);
    std::ofstream(root / p0 / "empty.jpg", std::ios::binary);
    std::ofstream(root / p0 / "notes.jpg") << "not an image\n";
    // Mid-grey noise-free picture: decodes, but shows no face.
    {
        std::ofstream f(root / p0 / "blank.pgm", std::ios::binary);
        constexpr int kSide = 200;
        f << "P5\n" << kSide << " " << kSide << "\n255\n";
        f << std::string(kSide * kSide, char(128));
    }

    std::string db = tmp_.str("db");
    auto r = run_facevec({"enroll", "--db", db, root.string()}, tmp_);
    EXPECT_EQ(r.code, kExitSomeFailed) << r.err;
    EXPECT_THAT(r.out, HasSubstr("enrolled 4, skipped 0"));
    EXPECT_THAT(r.out, HasSubstr("failed 4"));
    EXPECT_THAT(r.err, HasSubstr("truncated.jpg"));
    EXPECT_THAT(r.err, HasSubstr("empty.jpg"));
    EXPECT_THAT(r.err, HasSubstr("notes.jpg"));
    EXPECT_THAT(r.err, HasSubstr("blank.pgm: no face found"));

    r = run_facevec({"stats", "--db", db, "--json"}, tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    auto s = json::parse(r.out);
    EXPECT_EQ(s["faces"], 4);
    EXPECT_EQ(s["persons"], 2);
}

TEST_F(FacesTest, CalibrateStoresTheThresholdForTheTargetFar) {
    std::string db = tmp_.str("db");
    auto r = run_facevec(
        {"enroll", "--db", db, "--faces", "central", write_manifest()}, tmp_);
    ASSERT_EQ(r.code, 0) << r.err;

    // Two same-person and two different-person pairs of the sample: at a
    // target FAR of 0.5 one impostor pair of the two may be accepted, so
    // the threshold lands just below the farther impostor distance.
    const auto &a = sample_.people[0], &b = sample_.people[1],
               &c = sample_.people[2];
    std::string pairs = tmp_.str("pairs.txt");
    std::ofstream(pairs) << "2\n"
                         << a << " 1 2\n"
                         << b << " 1 2\n"
                         << a << " 1 " << b << " 1\n"
                         << b << " 2 " << c << " 1\n";
    r = run_facevec({"calibrate", "--db", db, "--pairs", pairs, "--far", "0.5",
                     "--faces", faces_},
                    tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("stored in " + db));
    EXPECT_THAT(r.out, HasSubstr("FAR 0.5"));

    r = run_facevec({"stats", "--db", db, "--json"}, tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    float stored = json::parse(r.out)["threshold"].get<float>();
    EXPECT_GT(stored, 0.0F);
    EXPECT_NE(stored, 0.30F);  // no longer the model's default

    // A missing pairs file is an error naming it.
    r = run_facevec({"calibrate", "--db", db, "--pairs", tmp_.str("none.txt"),
                     "--faces", faces_},
                    tmp_);
    EXPECT_NE(r.code, 0);
    EXPECT_THAT(r.err, HasSubstr("none.txt"));
}

// A folder of symlinks (a common way to pick a subset of a dataset) must
// give chips under --out, and write nothing beside the links' targets.
TEST_F(FacesTest, AlignWritesChipsOfSymlinkedPhotosUnderOut) {
    const std::string person = sample_.people.front();
    fs::path src = tmp_.path() / "originals";
    fs::path in = tmp_.path() / "links" / person;
    fs::create_directories(src);
    fs::create_directories(in);
    fs::copy_file(sample_.images[person][0], src / "a.jpg");
    fs::create_symlink(src / "a.jpg", in / "a.jpg");

    fs::path out = tmp_.path() / "chips";
    run_result r = run_facevec(
        {"align", (tmp_.path() / "links").string(), "--out", out.string()},
        tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(fs::is_regular_file(out / person / "a.png")) << r.err;
    EXPECT_FALSE(fs::exists(src / "a.png"));
}

// Without detection (--align center or none) every photo gives its one
// chip, also under the default "exactly one face" rule.
TEST_F(FacesTest, EnrollWithoutDetectionTakesOneChipPerPhoto) {
    const std::string person = sample_.people.front();
    fs::path in = tmp_.path() / "photos" / person;
    fs::create_directories(in);
    fs::copy_file(sample_.images[person][0], in / "a.jpg");
    fs::copy_file(sample_.images[person][1], in / "b.jpg");
    for (std::string mode : {"center", "none"}) {
        std::string db = tmp_.str("db-" + mode);
        run_result r = run_facevec({"enroll", "--db", db, "--align", mode,
                                    (tmp_.path() / "photos").string()},
                                   tmp_);
        EXPECT_EQ(r.code, 0) << mode << ": " << r.err;
        EXPECT_THAT(r.out, HasSubstr("enrolled 2,")) << mode;
    }
}

// The demo on a small dataset of links: 20 people with three photos (one
// enrolled, two known probes) and 10 strangers with one. It reports the
// stored threshold's figures, then those of one calibrated on the even
// strangers and checked on the odd ones.
TEST_F(FacesTest, DemoReportsStoredAndGalleryCalibratedThresholds) {
    fs::path data = tmp_.path() / "data" / "lfw";
    for (auto &p : sample_.people) {
        fs::create_directories(data / p);
        for (auto &img : sample_.images[p])
            fs::create_symlink(img, data / p / fs::path(img).filename());
    }
    constexpr size_t kStrangers = 10;
    size_t strangers = 0;
    std::vector<fs::path> dirs;
    for (auto &e : fs::directory_iterator(fs::path(faces_) / "lfw"))
        dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (auto &d : dirs) {
        auto it = fs::directory_iterator(d);
        fs::path only = it->path();
        if (std::distance(fs::directory_iterator(d),
                          fs::directory_iterator{}) != 1)
            continue;
        fs::create_directories(data / d.filename());
        fs::create_symlink(only, data / d.filename() / only.filename());
        if (++strangers == kStrangers)
            break;
    }
    ASSERT_EQ(strangers, kStrangers);

    run_result r =
        run_facevec({"demo", "--faces", (tmp_.path() / "data").string(), "--db",
                     tmp_.str("demo.db")},
                    tmp_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("20 persons with 2+ images (gallery), 40 "
                                 "known probes, 10 strangers"));
    EXPECT_THAT(r.out, HasSubstr("of 10 ("));
    // The five odd-numbered strangers are held out from the calibration;
    // every known probe is counted.
    EXPECT_THAT(r.out, ::testing::ContainsRegex(
                           "calibrated on the gallery \\(threshold [0-9.]+ "
                           "lets in 1% of half the strangers\\)"));
    EXPECT_THAT(r.out, ::testing::ContainsRegex(
                           "other strangers in [0-5] of 5 \\([0-9.]+\\), "
                           "known accepted as the right person [0-9]+ "));
}

}  // namespace
}  // namespace facevec
