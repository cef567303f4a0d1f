// `facevec import` killed with SIGKILL at random moments: after every
// kill the database opens, holds every batch the import reported as
// committed, holds no batch in part, and its index agrees with its store.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "api/engine.h"
#include "tests/test_util.h"

namespace facevec {
namespace {

constexpr uint32_t kDim = 8;
constexpr size_t kBatches = 30;
constexpr size_t kBatchRows = 40;
constexpr int kKills = 24;
constexpr int kMaxRuns = 200;
constexpr unsigned kSeed = 20261204;
// How far into the import a kill lands: after 0..kMaxCommitsBeforeKill
// reported batches, plus 0..kMaxDelayUs.
constexpr int kMaxCommitsBeforeKill = 3;
constexpr int kMaxDelayUs = 3000;

// Row r of batch b: component 0 is the batch, 1 the row, the rest vary,
// so every vector is distinct and names its batch.
std::vector<float> make_rows() {
    std::vector<float> v(kBatches * kBatchRows * kDim);
    std::mt19937 rng(kSeed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (size_t r = 0; r < kBatches * kBatchRows; ++r) {
        float *row = v.data() + r * kDim;
        row[0] = float(r / kBatchRows);
        row[1] = float(r);
        for (size_t c = 2; c < kDim; ++c)
            row[c] = u(rng);
    }
    return v;
}

void write_inputs(const std::string &npy, const std::string &labels) {
    std::vector<float> v = make_rows();
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(kBatches * kBatchRows) + ", " +
                       std::to_string(kDim) + "), }";
    constexpr size_t kHeader = 128;
    constexpr size_t kPreamble = 10;
    dict.resize(kHeader - kPreamble - 1, ' ');
    dict += '\n';
    std::ofstream f(npy, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(char(dict.size()));
    f.put(char(0));
    f << dict;
    f.write(reinterpret_cast<const char *>(v.data()),
            std::streamsize(v.size() * sizeof(float)));

    std::ofstream l(labels);
    for (size_t r = 0; r < kBatches * kBatchRows; ++r) {
        l << "person " << r % 7 << "\n";
    }
}

// One import run: started, then killed after some newly committed
// batches. The import prints "committed batch B rows FIRST N enrolled E"
// once batch B is durable.
struct run_outcome {
    std::set<size_t> committed;  // batches reported committed
    bool killed = false;         // false: the import ran to its end
};

run_outcome import_and_kill(const std::vector<std::string> &args,
                            int commits_before_kill, int delay_us) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        std::freopen("/dev/null", "w", stderr);
        std::vector<char *> argv;
        for (const auto &a : args)
            argv.push_back(const_cast<char *>(a.data()));
        argv.push_back(nullptr);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(fds[1]);

    // Read the child's commit lines; kill it after the chosen number.
    run_outcome out;
    std::FILE *child_out = fdopen(fds[0], "r");
    char line[256];
    int seen = 0;
    while (seen < commits_before_kill &&
           std::fgets(line, sizeof(line), child_out) != nullptr) {
        unsigned long long batch = 0, first = 0, rows = 0, enrolled = 0;
        if (std::sscanf(line,
                        "committed batch %llu rows %llu %llu enrolled %llu",
                        &batch, &first, &rows, &enrolled) == 4) {
            out.committed.insert(size_t(batch));
            // Batches skipped on resume do not count: kills should land
            // while new batches are written.
            if (enrolled > 0)
                ++seen;
        }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    out.killed = kill(pid, SIGKILL) == 0;
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    out.killed = out.killed && WIFSIGNALED(wstatus);

    // Lines written before the kill still count.
    while (std::fgets(line, sizeof(line), child_out) != nullptr) {
        unsigned long long batch = 0;
        if (std::sscanf(line, "committed batch %llu", &batch) == 1) {
            out.committed.insert(size_t(batch));
        }
    }
    std::fclose(child_out);
    return out;
}

// Opens the database and checks it against the committed batches.
void check_database(const std::string &db, const std::set<size_t> &committed,
                    int run) {
    if (!std::filesystem::exists(db)) {
        ASSERT_TRUE(committed.empty()) << "run " << run;
        return;
    }
    auto e = engine::open(db, engine_options{});
    ASSERT_TRUE(e.is_ok()) << "run " << run << ": " << e.error().to_string();

    // Store: whole batches only, each row once, committed ones present.
    std::map<size_t, size_t> rows_per_batch;
    std::set<size_t> rows_seen;
    std::vector<float> stored;
    std::vector<uint64_t> ids;
    status st = (*e)->store().scan([&](const storage::face_record &r) {
        size_t row = size_t(r.embedding[1]);
        EXPECT_TRUE(rows_seen.insert(row).second) << "row " << row << " twice";
        ++rows_per_batch[size_t(r.embedding[0])];
        stored.insert(stored.end(), r.embedding.begin(), r.embedding.end());
        ids.push_back(r.id);
        return status::ok();
    });
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    for (const auto &[batch, n] : rows_per_batch) {
        EXPECT_EQ(n, kBatchRows)
            << "run " << run << ": batch " << batch << " is partial";
    }
    for (size_t batch : committed) {
        EXPECT_EQ(rows_per_batch.count(batch), 1u)
            << "run " << run << ": committed batch " << batch << " lost";
    }

    // Index: the same faces; each stored vector finds itself at 0.
    engine_stats s = (*e)->stats();
    EXPECT_EQ(s.indexed, ids.size()) << "run " << run;
    EXPECT_EQ(s.faces, ids.size()) << "run " << run;
    if (ids.empty())
        return;
    auto answers = (*e)->query(stored.data(), ids.size(), 1);
    ASSERT_TRUE(answers.is_ok()) << answers.error().to_string();
    for (size_t i = 0; i < ids.size(); ++i) {
        ASSERT_EQ((*answers)[i].top.size(), 1u);
        EXPECT_EQ((*answers)[i].top[0].distance, 0.0f) << "face " << ids[i];
        EXPECT_EQ((*answers)[i].top[0].face, ids[i]);
    }
}

TEST(CrashTest, KilledImportKeepsEveryCommittedBatchWhole) {
    testing::temp_dir dir;
    std::string npy = dir.str("v.npy"), labels = dir.str("v.txt");
    write_inputs(npy, labels);
    std::string db = dir.str("db");
    std::vector<std::string> args = {testing::facevec_bin(),
                                     "import",
                                     "--db",
                                     db,
                                     "--vectors",
                                     npy,
                                     "--labels",
                                     labels,
                                     "--batch",
                                     std::to_string(kBatchRows),
                                     "--report-commits"};

    // Each run resumes the last (imports skip what is there) until one
    // finishes; then a fresh database starts.
    std::mt19937 rng(kSeed);
    std::uniform_int_distribution<int> commits(0, kMaxCommitsBeforeKill);
    std::uniform_int_distribution<int> delay(0, kMaxDelayUs);
    std::set<size_t> committed;
    int kills = 0;
    int completed = 0;
    int run = 0;
    for (; run < kMaxRuns && kills < kKills; ++run) {
        run_outcome out = import_and_kill(args, commits(rng), delay(rng));
        committed.insert(out.committed.begin(), out.committed.end());
        check_database(db, committed, run);
        if (::testing::Test::HasFatalFailure())
            return;
        if (out.killed) {
            ++kills;
            continue;
        }
        EXPECT_EQ(committed.size(), kBatches) << "run " << run;
        ++completed;
        std::filesystem::remove_all(db);
        committed.clear();
    }
    EXPECT_GE(kills, kKills);
    ::testing::Test::RecordProperty("runs", run);
    ::testing::Test::RecordProperty("kills", kills);
    ::testing::Test::RecordProperty("completed_imports", completed);
}

}  // namespace
}  // namespace facevec
