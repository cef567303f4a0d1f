// facevec: the command-line program. Each subcommand lives in its own
// file (see commands.h); this file wires them together.
#include <CLI/CLI.hpp>

#include "tools/cli_util.h"
#include "tools/commands.h"

int main(int argc, char **argv) {
    CLI::App app{"facevec: face embedding search engine"};
    app.require_subcommand(1);
    app.set_help_all_flag("--help-all", "Help for every subcommand");

    facevec::cli::register_db_commands(app);
    facevec::cli::register_serve_commands(app);
    facevec::cli::register_image_commands(app);
    facevec::cli::register_align_commands(app);
    facevec::cli::register_face_commands(app);
    facevec::cli::register_bench_commands(app);
    facevec::cli::register_train_commands(app);
    facevec::cli::register_embed_commands(app);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp &e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp &e) {
        return app.exit(e);
    } catch (const CLI::ParseError &e) {
        std::fprintf(stderr, "facevec: %s\n", e.what());
        return 2;
    }
    return facevec::cli::exit_code();
}
