#include "common/log.h"

#include <atomic>

#include <spdlog/sinks/null_sink.h>

namespace facevec {
namespace {

std::shared_ptr<spdlog::logger> silent_logger() {
    static auto l = std::make_shared<spdlog::logger>(
        "facevec", std::make_shared<spdlog::sinks::null_sink_mt>());
    return l;
}

std::atomic<std::shared_ptr<spdlog::logger>> &current() {
    static std::atomic<std::shared_ptr<spdlog::logger>> l{silent_logger()};
    return l;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger() {
    return current().load();
}

void set_logger(std::shared_ptr<spdlog::logger> l) {
    current().store(l ? std::move(l) : silent_logger());
}

}  // namespace facevec
