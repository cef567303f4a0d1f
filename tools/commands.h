// Registration of the facevec subcommands. Each group lives in its own
// file and adds its subcommands to the app; main() runs the one chosen.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace facevec::cli {

// Every register_* adds subcommands whose callbacks set the exit code
// through set_exit_code() and print errors through fail().
void register_db_commands(CLI::App &app);     // create, import, query, ...
void register_serve_commands(CLI::App &app);  // serve (HTTP API)
void register_image_commands(CLI::App &app);  // decode
void register_align_commands(CLI::App &app);  // align (face chips)
// enroll, eval, calibrate, demo (photos)
void register_face_commands(CLI::App &app);
// embed, import-weights (CNN embedders)
void register_embed_commands(CLI::App &app);
void register_bench_commands(CLI::App &app);  // bench scan
void register_train_commands(CLI::App &app);  // train (embedding head)

// `facevec query` with images: embeds every face of each input (files, or
// folders walked recursively) with the database's model and prints one
// JSON object per face. `model` names the weights file of a database
// enrolled with one (empty: the built-in model the database's fingerprint
// names); its fingerprint must match the database's. Defined with the
// photo commands.
void run_image_query(const std::string &db,
                     const std::vector<std::string> &inputs,
                     const std::string &model, int k,
                     std::optional<float> threshold, bool largest);

}  // namespace facevec::cli
