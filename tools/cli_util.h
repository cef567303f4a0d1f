// Helpers shared by the subcommands: error reporting, exit codes and the
// progress bar.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>

#include "common/status.h"

namespace facevec::cli {

// Exit status of the program once the chosen subcommand returns.
void set_exit_code(int code);
int exit_code();

// Prints "facevec: <message>" as one line on stderr and sets exit code 1.
void fail(const std::string &message);
void fail(const status &s);

// Runs a subcommand body, turning anything thrown into one error line.
template <typename Fn>
void run(Fn &&fn) {
    try {
        fn();
    } catch (const std::exception &e) {
        fail(std::string("internal error: ") + e.what());
    }
}

// The path of the LFW-style faces folder: $FACEVEC_FACES, or ../shared/
// faces beside the current directory's checkout.
std::string default_faces_dir();

// A progress line on stderr with rate and ETA, drawn only when stderr is a
// terminal and at most a few times per second.
class progress {
  public:
    progress(std::string what, uint64_t total);
    ~progress();
    void advance(uint64_t n);
    void finish();

  private:
    std::string what_;
    uint64_t total_;
    uint64_t done_ = 0;
    bool tty_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_draw_;
    void draw(bool final_line);
};

}  // namespace facevec::cli
