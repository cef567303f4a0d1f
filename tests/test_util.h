// Helpers shared by the test programs: temporary folders, the LFW data
// folder, the reference outputs and the built CLI. The FACEVEC_TEST_*
// macros come from facevec_test() in cmake/facevec.cmake.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#ifdef _OPENMP
#include <gtest/gtest.h>
#include <omp.h>

#include "common/threading.h"
#endif

namespace facevec::testing {

// A fresh folder under the system temp dir, removed when it goes out of
// scope.
class temp_dir {
  public:
    temp_dir() {
        std::random_device rd;
        path_ = std::filesystem::temp_directory_path() /
                ("facevec-test-" + std::to_string(getpid()) + "-" +
                 std::to_string(rd()));
        std::filesystem::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir &) = delete;
    temp_dir &operator=(const temp_dir &) = delete;

    const std::filesystem::path &path() const { return path_; }
    std::string str(const std::string &name = "") const {
        return name.empty() ? path_.string() : (path_ / name).string();
    }

  private:
    std::filesystem::path path_;
};

inline std::string env_or(const char *name, const std::string &fallback) {
    const char *v = std::getenv(name);
    return (v != nullptr && *v != '\0') ? std::string(v) : fallback;
}

// The LFW folder (FACEVEC_FACES, else ../shared/faces beside the
// checkout), or "" when it is absent. Tests that need it call
// GTEST_SKIP() << "LFW not found at ..." on "".
inline std::string faces_dir() {
    std::string d = env_or("FACEVEC_FACES", FACEVEC_TEST_FACES);
    return std::filesystem::is_directory(d + "/lfw") ? d : std::string();
}

// ../shared/reference, or "" when absent.
inline std::string reference_dir() {
    std::string d = env_or("FACEVEC_REFERENCE", FACEVEC_TEST_REFERENCE);
    return std::filesystem::is_directory(d) ? d : std::string();
}

// The built facevec program (set by ctest).
inline std::string facevec_bin() {
    return env_or("FACEVEC_BIN", FACEVEC_TEST_BIN);
}

inline std::string source_dir() {
    return env_or("FACEVEC_SOURCE_DIR", FACEVEC_TEST_SOURCE_DIR);
}

// Cosine similarity of two n-float vectors, accumulated in double. NaN
// when either is all zeros.
inline double cosine(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; ++i) {
        ab += double{a[i]} * b[i];
        aa += double{a[i]} * a[i];
        bb += double{b[i]} * b[i];
    }
    return ab / std::sqrt(aa * bb);
}

#ifdef _OPENMP
// For test programs that run networks (linked with OpenMP): one compute
// thread unless FACEVEC_THREADS says otherwise. The suite runs two test
// programs at once on two cores, and OpenMP teams on an oversubscribed
// machine wait on each other at every barrier. Register it once per
// program with ::testing::AddGlobalTestEnvironment.
class one_compute_thread_environment : public ::testing::Environment {
  public:
    void SetUp() override {
        if (std::getenv(kThreadsEnv) == nullptr) {
            setenv(kThreadsEnv, "1", /*overwrite=*/0);
            omp_set_num_threads(1);
        }
    }
};
#endif

}  // namespace facevec::testing
