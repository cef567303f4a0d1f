#include "tools/commands.h"

namespace facevec::cli {

void register_db_commands(CLI::App &app) { (void)app; }

}  // namespace facevec::cli
