// The database subcommands, run as the real facevec program: exit codes,
// the one-line errors, JSON Lines output, and labels in any script.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api/engine.h"
#include "tests/test_util.h"

namespace facevec {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using json = nlohmann::json;

constexpr uint32_t kDim = 4;
constexpr int kExitFailure = 1;
constexpr int kExitSomeRejected = 3;

struct run_result {
    int code = -1;
    std::string out;
    std::string err;
};

std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

std::vector<std::string> lines_of(const std::string &text) {
    std::vector<std::string> lines;
    std::stringstream s(text);
    for (std::string line; std::getline(s, line);)
        lines.push_back(line);
    return lines;
}

std::string shell_quote(const std::string &arg) {
    std::string q = "'";
    for (char c : arg) {
        q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return q + "'";
}

// The raw bytes of a .npy v1.0 file with the given header dict; returns
// the offset of the data.
size_t write_npy_raw(const std::string &path, const std::string &dict,
                     const void *data, size_t bytes) {
    std::string header = dict;
    constexpr size_t kPreamble = 10;
    constexpr size_t kAlign = 64;
    size_t total =
        (kPreamble + header.size() + 1 + kAlign - 1) / kAlign * kAlign;
    header.resize(total - kPreamble - 1, ' ');
    header += '\n';
    std::ofstream f(path, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t len = uint16_t(header.size());
    f.put(char(len & 0xff));
    f.put(char(len >> 8));
    f << header;
    f.write(static_cast<const char *>(data), std::streamsize(bytes));
    return total;
}

// An n x d float32 .npy; `keep_bytes` cuts the data short.
size_t write_npy(const std::string &path, const std::vector<float> &v, size_t d,
                 size_t keep_bytes = SIZE_MAX) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(v.size() / d) + ", " + std::to_string(d) +
                       "), }";
    return write_npy_raw(path, dict, v.data(),
                         std::min(keep_bytes, v.size() * sizeof(float)));
}

void write_fvecs(const std::string &path, const std::vector<float> &v, size_t d,
                 size_t drop_bytes = 0) {
    std::string bytes;
    for (size_t r = 0; r < v.size() / d; ++r) {
        int32_t dim = int32_t(d);
        bytes.append(reinterpret_cast<const char *>(&dim), sizeof(dim));
        bytes.append(reinterpret_cast<const char *>(v.data() + r * d),
                     d * sizeof(float));
    }
    bytes.resize(bytes.size() - drop_bytes);
    std::ofstream(path, std::ios::binary) << bytes;
}

void write_text(const std::string &path, const std::string &text) {
    std::ofstream(path, std::ios::binary) << text;
}

std::string join_lines(const std::vector<std::string> &labels) {
    std::string s;
    for (const auto &l : labels)
        s += l + "\n";
    return s;
}

// n vectors of kDim: row i is (i, 1, 0, 0) so every row is distinct.
std::vector<float> distinct_rows(size_t n) {
    std::vector<float> v(n * kDim, 0.0f);
    for (size_t i = 0; i < n; ++i) {
        v[i * kDim] = float(i) * 10;
        v[i * kDim + 1] = 1;
    }
    return v;
}

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class CliTest : public ::testing::Test {
  protected:
    run_result cli(const std::vector<std::string> &args) {
        std::string cmd = shell_quote(testing::facevec_bin());
        for (const auto &a : args)
            cmd += " " + shell_quote(a);
        std::string out = dir_.str("stdout"), err = dir_.str("stderr");
        cmd += " >" + shell_quote(out) + " 2>" + shell_quote(err);
        int rc = std::system(cmd.c_str());
        run_result r;
        r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
        r.out = read_file(out);
        r.err = read_file(err);
        return r;
    }

    // Imports `rows` labelled `labels` into db_; expects success.
    void import(const std::vector<float> &rows,
                const std::vector<std::string> &labels) {
        write_npy(path("in.npy"), rows, kDim);
        write_text(path("in.txt"), join_lines(labels));
        run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                            "--labels", path("in.txt")});
        ASSERT_EQ(r.code, 0) << r.err;
    }

    std::string path(const std::string &name) { return dir_.str(name); }

    // One failure: the exit code and a single "facevec: " line.
    static void expect_one_error_line(const run_result &r, int code,
                                      const std::string &part) {
        EXPECT_EQ(r.code, code) << r.err;
        auto lines = lines_of(r.err);
        ASSERT_EQ(lines.size(), 1u) << r.err;
        EXPECT_THAT(lines[0], StartsWith("facevec: "));
        EXPECT_THAT(lines[0], HasSubstr(part));
    }

    testing::temp_dir dir_;
    std::string db_ = dir_.str("db");
};

TEST_F(CliTest, EverySubcommandHasHelp) {
    for (const char *sub : {"create", "import", "query", "remove", "persons",
                            "stats", "export", "purge"}) {
        run_result r = cli({sub, "--help"});
        EXPECT_EQ(r.code, 0) << sub;
        EXPECT_THAT(r.out, HasSubstr("--db")) << sub;
    }
}

TEST_F(CliTest, CreateThenStatsShowsTheSettings) {
    run_result r = cli({"create", "--db", db_, "--dim", "128", "--normalized",
                        "--threshold", "0.8"});
    ASSERT_EQ(r.code, 0) << r.err;
    r = cli({"stats", "--db", db_, "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    json s = json::parse(r.out);
    EXPECT_EQ(s["dim"], 128);
    EXPECT_EQ(s["normalized"], true);
    EXPECT_FLOAT_EQ(s["threshold"].get<float>(), 0.8f);
    EXPECT_EQ(s["faces"], 0);

    expect_one_error_line(cli({"create", "--db", db_, "--dim", "128"}),
                          kExitFailure, "already exists");
}

TEST_F(CliTest, ImportCreatesTheDatabaseAndQueryFindsEachPerson) {
    constexpr size_t kRows = 25;
    std::vector<std::string> labels;
    for (size_t i = 0; i < kRows; ++i)
        labels.push_back("p" + std::to_string(i));
    std::vector<float> rows = distinct_rows(kRows);
    write_npy(path("in.npy"), rows, kDim);
    write_text(path("in.txt"), join_lines(labels));
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt"), "--batch", "7"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("25 enrolled, 0 skipped"));
    EXPECT_THAT(r.out, HasSubstr("(created)"));

    r = cli({"query", "--db", db_, "--vectors", path("in.npy"), "-k", "3"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), kRows);
    for (size_t i = 0; i < kRows; ++i) {
        json a = json::parse(lines[i]);
        EXPECT_EQ(a["query"], i);
        EXPECT_EQ(a["person"], labels[i]);
        EXPECT_EQ(a["distance"], 0.0);
        ASSERT_EQ(a["top"].size(), 3u);
        EXPECT_EQ(a["top"][0]["person"], labels[i]);
        EXPECT_TRUE(a["top"][0]["face"].is_number_unsigned());
    }
}

TEST_F(CliTest, ImportAgainSkipsWhatIsAlreadyEnrolled) {
    import(distinct_rows(3), {"a", "b", "c"});
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("0 enrolled, 3 skipped"));
}

TEST_F(CliTest, ImportReadsFvecsAndTheDefaultLabelsFile) {
    write_fvecs(path("v.fvecs"), distinct_rows(2), kDim);
    write_text(path("v.labels.txt"), "x\ny\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("v.fvecs")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("2 enrolled"));
}

TEST_F(CliTest, ManifestImportReadsNamedColumnsQuotesAndUtf8) {
    write_npy(path("a.npy"), distinct_rows(3), kDim);
    write_fvecs(path("b.fvecs"), distinct_rows(5), kDim);
    // Columns in another order, a quoted label with a comma and a quote,
    // a quoted source with a line break, a UTF-8 label, a whole file (no
    // row), CRLF endings.
    write_text(path("m.csv"),
               "\xef\xbb\xbfrow,person,path,source\r\n"
               "0,\"Smith, \"\"J\"\" Jr\",a.npy,\"cam\n1\"\r\n"
               "2,Zoë 山田 🙂,a.npy,custom source\r\n"
               ",whole,b.fvecs,\r\n");
    run_result r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("7 enrolled, 0 skipped"));
    r = cli({"persons", "--db", db_, "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), 3u) << r.out;
    EXPECT_EQ(json::parse(lines[0])["person"], "Smith, \"J\" Jr");
    EXPECT_EQ(json::parse(lines[1])["person"], "Zoë 山田 🙂");
    EXPECT_EQ(json::parse(lines[2])["person"], "whole");
    EXPECT_EQ(json::parse(lines[2])["faces"], 5);

    // The query of a.npy's row 2 finds its label; importing again skips.
    std::vector<float> a = distinct_rows(3);
    write_npy(path("q.npy"), std::vector<float>(a.begin() + 2 * kDim, a.end()),
              kDim);
    r = cli({"query", "--db", db_, "--vectors", path("q.npy")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["person"], "Zoë 山田 🙂");
    r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("0 enrolled, 7 skipped"));
}

TEST_F(CliTest, ManifestWithoutHeaderIsPathThenPerson) {
    write_npy(path("a.npy"), distinct_rows(2), kDim);
    write_text(path("m.csv"), "a.npy,ann\n\n");
    run_result r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("2 enrolled"));
}

TEST_F(CliTest, ManifestBadRowsAreReportedWithTheirLineAndTheRestImported) {
    write_npy(path("a.npy"), distinct_rows(3), kDim);
    write_npy(path("wide.npy"), std::vector<float>(2 * (kDim + 1), 1.0f),
              kDim + 1);
    write_text(path("empty.npy"), "");
    write_text(path("m.csv"),
               "path,person,row\n"  // line 1
               "a.npy,ok,0\n"       // line 2
               "a.npy,far,7\n"      // line 3: row out of range
               "nothere.npy,x,0\n"  // line 4: missing file
               "a.npy,y,one\n"      // line 5: not a row number
               "a.npy,z\n"          // line 6: too few fields
               "wide.npy,w,0\n"     // line 7: wrong dim
               "empty.npy,e,0\n"    // line 8: unreadable vector file
               "a.npy,ok,1\n");     // line 9
    run_result r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    EXPECT_EQ(r.code, kExitSomeRejected) << r.err;
    EXPECT_THAT(r.out, HasSubstr("2 enrolled, 0 skipped"));
    EXPECT_THAT(r.out, HasSubstr("6 rejected"));
    std::string m = path("m.csv");
    EXPECT_THAT(r.err, HasSubstr("facevec: " + m +
                                 " line 3: row 7 is out of "
                                 "range: a.npy has 3 rows"));
    EXPECT_THAT(r.err,
                HasSubstr("facevec: " + m + " line 4: " + path("nothere.npy") +
                          ": No such file or directory"));
    EXPECT_THAT(r.err, HasSubstr("facevec: " + m +
                                 " line 5: row 'one' is "
                                 "not a row number"));
    EXPECT_THAT(r.err,
                HasSubstr("facevec: " + m + " line 6: 2 fields, expected 3"));
    EXPECT_THAT(r.err, HasSubstr("facevec: " + m + " line 7: "));
    EXPECT_THAT(r.err, HasSubstr("embedding has 5 values, the database's "
                                 "dim is 4"));
    EXPECT_THAT(r.err, HasSubstr("facevec: " + m +
                                 " line 8: " + path("empty.npy") + ": "));
    EXPECT_EQ(lines_of(r.err).size(), 6u) << r.err;
}

TEST_F(CliTest, ManifestMissingOrUnknownColumnOrOpenQuoteFails) {
    write_npy(path("a.npy"), distinct_rows(1), kDim);
    write_text(path("m.csv"), "path,row\na.npy,0\n");
    run_result r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    expect_one_error_line(r, kExitFailure,
                          path("m.csv") +
                              ": missing column 'person' "
                              "(header: path,row)");
    write_text(path("m.csv"), "path,persn\na.npy,ann\n");
    r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    expect_one_error_line(r, kExitFailure,
                          path("m.csv") +
                              " line 1: unknown column 'persn' "
                              "(known: path,person,row,source)");
    write_text(path("m.csv"), "path,person\na.npy,\"ann\n");
    r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    expect_one_error_line(
        r, kExitFailure,
        path("m.csv") + " line 2: a quoted field is never closed");
    write_text(path("m.csv"), "path,person\na.npy,\"ann\"x\n");
    r = cli({"import", "--db", db_, "--manifest", path("m.csv")});
    expect_one_error_line(r, kExitFailure,
                          path("m.csv") +
                              " line 2: unexpected character "
                              "after a closing quote");
    EXPECT_FALSE(std::filesystem::exists(db_));

    r = cli({"import", "--db", db_, "--manifest", path("m.csv"), "--vectors",
             path("a.npy")});
    EXPECT_NE(r.code, 0);
    EXPECT_THAT(r.err, HasSubstr("excludes"));
}

TEST_F(CliTest, StrictManifestImportWritesNothingWhenARowIsBad) {
    write_npy(path("a.npy"), distinct_rows(2), kDim);
    write_text(path("m.csv"), "path,person,row\na.npy,a,0\na.npy,b,5\n");
    run_result r =
        cli({"import", "--db", db_, "--manifest", path("m.csv"), "--strict"});
    expect_one_error_line(r, kExitFailure, path("m.csv") + " line 3: row 5");
    EXPECT_THAT(r.err, HasSubstr("nothing imported"));
    EXPECT_FALSE(std::filesystem::exists(db_));
}

TEST_F(CliTest, InvalidItemsAreReportedOneByOneAndTheRestImported) {
    std::vector<float> rows = distinct_rows(7);
    rows[1 * kDim + 2] = std::numeric_limits<float>::quiet_NaN();
    rows[2 * kDim + 3] = std::numeric_limits<float>::infinity();
    std::vector<std::string> labels = {
        "ok0", "nan", "inf", "", std::string(257, 'x'), "bad\xc3(", "ok6"};
    write_npy(path("in.npy"), rows, kDim);
    write_text(path("in.txt"), join_lines(labels));
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt")});
    EXPECT_EQ(r.code, kExitSomeRejected) << r.err;
    EXPECT_THAT(r.out, HasSubstr("2 enrolled, 0 skipped"));
    EXPECT_THAT(r.out, HasSubstr("5 rejected"));

    auto errs = lines_of(r.err);
    ASSERT_EQ(errs.size(), 5u) << r.err;
    EXPECT_THAT(errs[0], HasSubstr("row 1"));
    EXPECT_THAT(errs[0], HasSubstr("NaN at component 2"));
    EXPECT_THAT(errs[1], HasSubstr("row 2"));
    EXPECT_THAT(errs[1], HasSubstr("Inf at component 3"));
    EXPECT_THAT(errs[2], HasSubstr("row 3"));
    EXPECT_THAT(errs[2], HasSubstr("empty"));
    EXPECT_THAT(errs[3], HasSubstr("row 4"));
    EXPECT_THAT(errs[3], HasSubstr("256"));
    EXPECT_THAT(errs[4], HasSubstr("row 5"));
    EXPECT_THAT(errs[4], HasSubstr("UTF-8"));
    for (const auto &e : errs)
        EXPECT_THAT(e, StartsWith("facevec: "));
}

TEST_F(CliTest, StrictImportWritesNothingWhenAnItemIsInvalid) {
    std::vector<float> rows = distinct_rows(3);
    rows[2 * kDim] = std::numeric_limits<float>::quiet_NaN();
    write_npy(path("in.npy"), rows, kDim);
    write_text(path("in.txt"), "a\nb\nc\n");
    run_result r =
        cli({"import", "--db", db_, "--vectors", path("in.npy"), "--labels",
             path("in.txt"), "--strict", "--batch", "1"});
    expect_one_error_line(r, kExitFailure, "row 2");
    EXPECT_THAT(r.err, HasSubstr("nothing imported"));
    EXPECT_FALSE(std::filesystem::exists(db_));
}

TEST_F(CliTest, ImportOfAnotherDimThanTheDatabaseFails) {
    ASSERT_EQ(cli({"create", "--db", db_, "--dim", "8"}).code, 0);
    write_npy(path("in.npy"), distinct_rows(2), kDim);
    write_text(path("in.txt"), "a\nb\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt")});
    expect_one_error_line(r, kExitFailure,
                          "database " + db_ + " has dim 8, expected 4");
}

TEST_F(CliTest, QueryOfAnotherDimThanTheDatabaseFails) {
    ASSERT_EQ(cli({"create", "--db", db_, "--dim", "8"}).code, 0);
    write_npy(path("q.npy"), distinct_rows(2), kDim);
    run_result r = cli({"query", "--db", db_, "--vectors", path("q.npy")});
    expect_one_error_line(r, kExitFailure, "has dim 4, database");
}

TEST_F(CliTest, LabelsFileWithFewerOrMoreLinesFailsNamingBothCounts) {
    write_npy(path("in.npy"), distinct_rows(3), kDim);
    for (const char *text : {"a\nb\n", "a\nb\nc\nd\n"}) {
        write_text(path("in.txt"), text);
        run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                            "--labels", path("in.txt")});
        size_t n = lines_of(text).size();
        expect_one_error_line(r, kExitFailure,
                              "has " + std::to_string(n) + " lines but " +
                                  path("in.npy") + " has 3 vectors");
    }
    EXPECT_FALSE(std::filesystem::exists(db_));
}

TEST_F(CliTest, ByteOrderMarkBeforeTheFirstLabelIsDropped) {
    write_npy(path("in.npy"), distinct_rows(2), kDim);
    write_text(path("in.txt"),
               "\xef\xbb\xbf"
               "ann\nbob\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt")});
    ASSERT_EQ(r.code, 0) << r.err;
    r = cli({"persons", "--db", db_});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "ann\t1\nbob\t1\n");
}

TEST_F(CliTest, TruncatedNpyFailsNamingTheFileAndRow) {
    constexpr size_t kRowBytes = kDim * sizeof(float);
    size_t data = write_npy(path("in.npy"), distinct_rows(5), kDim,
                            /*keep_bytes=*/3 * kRowBytes + 2);
    write_text(path("in.txt"), "a\nb\nc\nd\ne\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                        "--labels", path("in.txt")});
    expect_one_error_line(r, kExitFailure,
                          path("in.npy") + ": truncated at row 3 (offset " +
                              std::to_string(data + 3 * kRowBytes) + ")");

    write_text(path("q.npy"), "\x93NUMPY\x01");
    r = cli({"create", "--db", db_, "--dim", "4"});
    ASSERT_EQ(r.code, 0);
    r = cli({"query", "--db", db_, "--vectors", path("q.npy")});
    expect_one_error_line(r, kExitFailure, path("q.npy"));
}

TEST_F(CliTest, TruncatedFvecsFailsNamingTheFileAndRow) {
    write_fvecs(path("in.fvecs"), distinct_rows(4), kDim, /*drop_bytes=*/3);
    write_text(path("in.txt"), "a\nb\nc\nd\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.fvecs"),
                        "--labels", path("in.txt")});
    constexpr size_t kRecord = 4 + kDim * sizeof(float);
    expect_one_error_line(r, kExitFailure,
                          path("in.fvecs") + ": truncated at row 3 (offset " +
                              std::to_string(3 * kRecord) + ")");
}

// A row of another dimension makes the size a non-multiple of the first
// row's record: the message names that row, not a truncation.
TEST_F(CliTest, FvecsRowOfAnotherDimensionIsNamed) {
    write_fvecs(path("a.fvecs"), distinct_rows(2), kDim);
    write_fvecs(path("b.fvecs"), distinct_rows(kDim + 1), kDim + 1);
    std::ifstream a(path("a.fvecs"), std::ios::binary);
    std::ifstream b(path("b.fvecs"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(a)),
                      std::istreambuf_iterator<char>());
    bytes.append(std::istreambuf_iterator<char>(b),
                 std::istreambuf_iterator<char>());
    std::ofstream(path("in.fvecs"), std::ios::binary) << bytes;
    write_text(path("in.txt"), "a\nb\nc\n");
    run_result r = cli({"import", "--db", db_, "--vectors", path("in.fvecs"),
                        "--labels", path("in.txt")});
    constexpr size_t kRecord = 4 + kDim * sizeof(float);
    expect_one_error_line(r, kExitFailure,
                          path("in.fvecs") + ": row 2 (offset " +
                              std::to_string(2 * kRecord) + "): dimension " +
                              std::to_string(kDim + 1) + " differs from row " +
                              "0's " + std::to_string(kDim));
}

TEST_F(CliTest, NpyOfAnotherDtypeOrOrderOrRankIsRefused) {
    std::vector<double> d(8, 0.0);
    struct bad_file {
        std::string dict;
        std::string message;
    };
    std::vector<bad_file> cases = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 4), }",
         "dtype <f8"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (4, 4), }",
         "Fortran"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (16,), }",
         "not 2-D"},
    };
    write_text(path("in.txt"), "a\nb\n");
    for (const auto &c : cases) {
        write_npy_raw(path("in.npy"), c.dict, d.data(), d.size() * 8);
        run_result r = cli({"import", "--db", db_, "--vectors", path("in.npy"),
                            "--labels", path("in.txt")});
        expect_one_error_line(r, kExitFailure, c.message);
    }
}

TEST_F(CliTest, QueryWithNanOrBadKFails) {
    import(distinct_rows(2), {"a", "b"});
    std::vector<float> q = distinct_rows(3);
    q[2 * kDim + 1] = std::numeric_limits<float>::quiet_NaN();
    write_npy(path("q.npy"), q, kDim);
    run_result r = cli({"query", "--db", db_, "--vectors", path("q.npy")});
    expect_one_error_line(r, kExitFailure,
                          path("q.npy") + " row 2: NaN at component 1");

    for (const char *k : {"0", "-3"}) {
        r = cli({"query", "--db", db_, "--vectors", path("in.npy"), "-k", k});
        expect_one_error_line(r, kExitFailure,
                              std::string("k = ") + k + " is out of range");
        EXPECT_TRUE(r.out.empty());
    }
}

TEST_F(CliTest, QueryFartherThanTheThresholdPrintsNullPerson) {
    import(distinct_rows(1), {"a"});
    std::vector<float> q = {0, 3, 0, 0};  // squared distance 4
    write_npy(path("q.npy"), q, kDim);
    run_result r = cli(
        {"query", "--db", db_, "--vectors", path("q.npy"), "--threshold", "1"});
    ASSERT_EQ(r.code, 0) << r.err;
    json a = json::parse(r.out);
    EXPECT_TRUE(a["person"].is_null());
    EXPECT_EQ(a["distance"], 4.0);
    EXPECT_EQ(a["top"][0]["person"], "a");

    r = cli(
        {"query", "--db", db_, "--vectors", path("q.npy"), "--threshold", "5"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["person"], "a");
}

TEST_F(CliTest, RemovingUnknownPersonOrFaceFails) {
    import(distinct_rows(2), {"a", "b"});
    expect_one_error_line(cli({"remove", "--db", db_, "--person", "zed"}),
                          kExitFailure, "zed");
    expect_one_error_line(cli({"remove", "--db", db_, "--face", "987654"}),
                          kExitFailure, "987654");

    run_result r = cli({"remove", "--db", db_, "--person", "a"});
    ASSERT_EQ(r.code, 0) << r.err;
    r = cli({"persons", "--db", db_});
    EXPECT_EQ(r.out, "b\t1\n");

    // Exactly one of --person and --face.
    EXPECT_NE(cli({"remove", "--db", db_}).code, 0);
    EXPECT_NE(cli({"remove", "--db", db_, "--person", "b", "--face", "1"}).code,
              0);
}

TEST_F(CliTest, PurgeAfterRemoveKeepsTheRest) {
    import(distinct_rows(2), {"a", "b"});
    ASSERT_EQ(cli({"remove", "--db", db_, "--person", "a"}).code, 0);
    run_result r = cli({"purge", "--db", db_});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("purged"));
    EXPECT_EQ(cli({"persons", "--db", db_}).out, "b\t1\n");
}

TEST_F(CliTest, MissingUnreadableOrCorruptDatabaseFails) {
    run_result r = cli({"stats", "--db", path("nowhere")});
    expect_one_error_line(r, kExitFailure, path("nowhere"));

    write_text(path("a-file"), "not a database");
    r = cli({"stats", "--db", path("a-file")});
    expect_one_error_line(r, kExitFailure, path("a-file"));

    ASSERT_EQ(cli({"create", "--db", db_, "--dim", "4"}).code, 0);
    for (const auto &entry : std::filesystem::directory_iterator(db_)) {
        std::string name = entry.path().filename().string();
        if (name.rfind("MANIFEST", 0) == 0 || name == "CURRENT") {
            write_text(entry.path().string(), "garbage garbage garbage");
        }
    }
    r = cli({"stats", "--db", db_});
    expect_one_error_line(r, kExitFailure, db_);
}

TEST_F(CliTest, DatabaseWithoutReadPermissionFails) {
    if (geteuid() == 0)
        GTEST_SKIP() << "root reads any file";
    ASSERT_EQ(cli({"create", "--db", db_, "--dim", "4"}).code, 0);
    std::filesystem::permissions(db_, std::filesystem::perms::none);
    run_result r = cli({"stats", "--db", db_});
    std::filesystem::permissions(db_, std::filesystem::perms::owner_all);
    expect_one_error_line(r, kExitFailure, db_);
}

TEST_F(CliTest, DatabaseInUseByAnotherProcessFails) {
    ASSERT_EQ(cli({"create", "--db", db_, "--dim", "4"}).code, 0);
    auto held = engine::open(db_, engine_options{});
    ASSERT_TRUE(held.is_ok()) << held.error().to_string();
    run_result r = cli({"stats", "--db", db_});
    expect_one_error_line(r, kExitFailure, db_);
    EXPECT_THAT(r.err, ::testing::ContainsRegex("in use|lock"));
}

TEST_F(CliTest, LabelsInAnyScriptRoundTripUnchanged) {
    std::vector<std::string> labels = {
        "Zoë Saldaña",         "Владимир Путин", "王菲",
        "山田 太郎",           "🙂 smile",     "Ångström, Jr.",
        "Nguyễn Thị Minh Khai"};
    std::vector<float> rows = distinct_rows(labels.size());
    import(rows, labels);
    size_t in_header = write_npy(path("in.npy"), rows, kDim);

    // query: the JSON carries each label as it was.
    run_result r = cli({"query", "--db", db_, "--vectors", path("in.npy")});
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), labels.size());
    for (size_t i = 0; i < labels.size(); ++i) {
        EXPECT_EQ(json::parse(lines[i])["person"], labels[i]);
    }

    // persons: label order, each once.
    r = cli({"persons", "--db", db_, "--json"});
    ASSERT_EQ(r.code, 0) << r.err;
    std::vector<std::string> listed;
    for (const auto &line : lines_of(r.out)) {
        listed.push_back(json::parse(line)["person"]);
    }
    std::vector<std::string> sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(listed, sorted);

    // export: the same vectors and labels, byte for byte, in id order.
    r = cli({"export", "--db", db_, "--out", path("out"), "--ids"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_file(path("out.labels.txt")), join_lines(labels));
    EXPECT_EQ(read_file(path("out.npy")).substr(128),
              read_file(path("in.npy")).substr(in_header));
    EXPECT_EQ(lines_of(read_file(path("out.ids.txt"))).size(), labels.size());
}

TEST_F(CliTest, FailedExportLeavesNoPartialFiles) {
    write_npy(path("in.npy"), distinct_rows(3), kDim);
    write_text(path("in.txt"), "a\nb\nc\n");
    ASSERT_EQ(cli({"import", "--db", db_, "--vectors", path("in.npy"),
                   "--labels", path("in.txt")})
                  .code,
              0);
    // The labels file cannot be created: a folder holds its name.
    std::filesystem::create_directories(path("dump.labels.txt"));
    run_result r = cli({"export", "--db", db_, "--out", path("dump")});
    expect_one_error_line(r, kExitFailure, path("dump.labels.txt"));
    EXPECT_FALSE(std::filesystem::exists(path("dump.npy")));
    EXPECT_TRUE(std::filesystem::is_directory(path("dump.labels.txt")));

    std::filesystem::remove(path("dump.labels.txt"));
    r = cli({"export", "--db", db_, "--out", path("dump")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(std::filesystem::exists(path("dump.npy")));
    EXPECT_TRUE(std::filesystem::exists(path("dump.labels.txt")));
}

TEST_F(CliTest, ExportThenImportRebuildsTheSameDatabase) {
    import(distinct_rows(4), {"a", "b", "b", "c"});
    ASSERT_EQ(cli({"export", "--db", db_, "--out", path("dump")}).code, 0);
    std::string copy = path("copy");
    run_result r = cli({"import", "--db", copy, "--vectors", path("dump.npy")});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(cli({"persons", "--db", copy}).out, "a\t1\nb\t2\nc\t1\n");
}

TEST_F(CliTest, PersonsPagesWithAfterAndLimit) {
    import(distinct_rows(4), {"d", "a", "c", "b"});
    run_result r =
        cli({"persons", "--db", db_, "--after", "a", "--limit", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "b\t1\nc\t1\n");
}

}  // namespace
}  // namespace facevec
