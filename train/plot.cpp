#include "train/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace facevec::train {
namespace {

constexpr char kPython[] = "/usr/bin/python3";
// At most this many ROC points go to the script (the curve is sampled).
constexpr size_t kMaxRocPoints = 2000;
// Characters of the script's output quoted in an error.
constexpr size_t kErrorTail = 600;

std::filesystem::path temp_path(const std::string &suffix) {
    std::random_device rd;
    return std::filesystem::temp_directory_path() /
           ("facevec-plot-" + std::to_string(getpid()) + "-" +
            std::to_string(rd()) + suffix);
}

std::string tail_of(const std::filesystem::path &p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    return s.size() > kErrorTail ? s.substr(s.size() - kErrorTail) : s;
}

// Runs argv[0] with output to `log`; returns the exit status or -1.
int run(const std::vector<std::string> &args,
        const std::filesystem::path &log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    std::vector<char *> argv;
    for (const std::string &a : args) {
        argv.push_back(const_cast<char *>(a.c_str()));
    }
    argv.push_back(nullptr);

    pid_t pid = 0;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

std::string default_plot_script() {
    return std::string(FACEVEC_TRAIN_SOURCE_DIR) + "/tools/plot.py";
}

nlohmann::json verification_plot_data(std::span<const float> distances,
                                      std::span<const uint8_t> same,
                                      const verification_report &r) {
    nlohmann::json j;
    j["kind"] = "verification";
    j["same"] = nlohmann::json::array();
    j["different"] = nlohmann::json::array();
    for (size_t i = 0; i < distances.size(); ++i) {
        j[same[i] != 0 ? "same" : "different"].push_back(distances[i]);
    }
    const size_t step = std::max<size_t>(1, r.roc.size() / kMaxRocPoints);
    for (size_t i = 0; i < r.roc.size(); i += step) {
        j["roc"]["far"].push_back(r.roc[i].far);
        j["roc"]["tar"].push_back(r.roc[i].tar);
    }
    j["roc"]["far"].push_back(r.roc.back().far);
    j["roc"]["tar"].push_back(r.roc.back().tar);
    j["threshold"] = r.best_threshold;
    j["auc"] = r.auc;
    j["accuracy"] = r.accuracy_mean;
    return j;
}

status draw_plot(const nlohmann::json &data, const std::string &png,
                 const std::string &script) {
    if (access(kPython, X_OK) != 0) {
        return not_found(std::string(kPython) +
                         " is missing (install python3-matplotlib)");
    }
    if (!std::filesystem::is_regular_file(script)) {
        return not_found("plot script " + script + " is missing");
    }

    const std::filesystem::path json = temp_path(".json");
    const std::filesystem::path log = temp_path(".log");
    {
        std::ofstream out(json);
        out << data.dump();
        if (!out.flush())
            return io_error(json.string() + ": write failed");
    }
    const int rc = run({kPython, script, json.string(), png}, log);
    const std::string output = tail_of(log);
    std::error_code ec;
    std::filesystem::remove(json, ec);
    std::filesystem::remove(log, ec);
    if (rc != 0) {
        return status(error_code::internal,
                      "plot " + png + ": " + script + " failed (exit " +
                          std::to_string(rc) + "): " + output);
    }
    return status::ok();
}

}  // namespace facevec::train
