#include "tools/cli_util.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace facevec::cli {
namespace {

std::atomic<int> g_exit_code{0};

constexpr auto kRedrawInterval = std::chrono::milliseconds(200);

}  // namespace

void set_exit_code(int code) {
    g_exit_code = code;
}
int exit_code() {
    return g_exit_code;
}

void fail(const std::string &message) {
    std::fprintf(stderr, "facevec: %s\n", message.c_str());
    set_exit_code(1);
}

void fail(const status &s) {
    fail(s.message());
}

std::string default_faces_dir() {
    const char *env = std::getenv("FACEVEC_FACES");
    if (env != nullptr && *env != '\0')
        return env;
    return "../shared/faces";
}

progress::progress(std::string what, uint64_t total)
    : what_(std::move(what)),
      total_(total),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

progress::~progress() {
    finish();
}

void progress::advance(uint64_t n) {
    done_ += n;
    auto now = std::chrono::steady_clock::now();
    if (tty_ && now - last_draw_ >= kRedrawInterval) {
        last_draw_ = now;
        draw(false);
    }
}

void progress::finish() {
    if (finished_)
        return;
    finished_ = true;
    if (tty_)
        draw(true);
}

void progress::draw(bool final_line) {
    double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count();
    double rate = secs > 0 ? done_ / secs : 0;
    std::string eta = "?";
    if (rate > 0 && total_ >= done_) {
        eta = std::to_string(static_cast<long long>((total_ - done_) / rate)) +
              "s";
    }
    if (total_ > 0) {
        std::fprintf(stderr, "\r%s: %llu/%llu (%.0f%%) %.0f/s ETA %s   ",
                     what_.c_str(), static_cast<unsigned long long>(done_),
                     static_cast<unsigned long long>(total_),
                     100.0 * done_ / total_, rate, eta.c_str());
    } else {
        std::fprintf(stderr, "\r%s: %llu %.0f/s   ", what_.c_str(),
                     static_cast<unsigned long long>(done_), rate);
    }
    if (final_line)
        std::fputc('\n', stderr);
    std::fflush(stderr);
}

}  // namespace facevec::cli
