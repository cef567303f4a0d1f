// Helpers shared by the test programs: temporary folders, the LFW data
// folder and the built CLI. The FACEVEC_TEST_* macros come from
// facevec_test() in cmake/facevec.cmake.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

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

}  // namespace facevec::testing
