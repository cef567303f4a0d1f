// Registration of the facevec subcommands. Each group lives in its own
// file and adds its subcommands to the app; main() runs the one chosen.
#pragma once

#include <CLI/CLI.hpp>

namespace facevec::cli {

// Every register_* adds subcommands whose callbacks set the exit code
// through set_exit_code() and print errors through fail().
void register_db_commands(CLI::App &app);  // create, import, query, ...

}  // namespace facevec::cli
