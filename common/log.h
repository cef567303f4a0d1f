// The library's logger. Library code never prints: it logs through the
// logger the caller installs (spdlog), which by default discards
// everything. The CLI and the server decide what reaches the user.
#pragma once

#include <memory>

#include <spdlog/logger.h>

namespace facevec {

// The current logger; never null. Thread-safe.
std::shared_ptr<spdlog::logger> logger();

// Installs `l` as the library's logger; null restores the silent default.
void set_logger(std::shared_ptr<spdlog::logger> l);

}  // namespace facevec
