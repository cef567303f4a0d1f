// facevec decode: an image as facevec sees it, written back as a PNG.
#include <memory>
#include <string>

#include "embed/image.h"
#include "embed/preprocess.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace facevec::cli {
namespace {

struct decode_args {
    std::string input;
    std::string out;
    std::string model;
};

std::string known_models() {
    std::string names;
    for (const auto &n : embed::preprocess_spec_names()) {
        names += (names.empty() ? "" : ", ") + n;
    }
    return names;
}

// The decoded image, or with a model the network input turned back into
// a picture.
result<embed::image> picture_for(const decode_args &args) {
    if (args.model.empty())
        return embed::decode_file(args.input);

    const embed::preprocess_spec *spec =
        embed::find_preprocess_spec(args.model);
    if (spec == nullptr) {
        return invalid_argument(
            args.model + ": unknown model (known: " + known_models() + ")");
    }
    embed::decode_options opts;
    opts.min_side = embed::decode_min_side(*spec);
    auto img = embed::decode_file(args.input, opts);
    if (!img)
        return img.error();
    auto input = embed::preprocess(*img, *spec);
    if (!input)
        return input.error().with_context(args.input);
    return embed::input_to_image(*input, *spec);
}

void run_decode(const decode_args &args) {
    auto picture = picture_for(args);
    if (!picture) {
        fail(picture.error());
        return;
    }
    status written = embed::write_png(*picture, args.out);
    if (!written.is_ok())
        fail(written);
}

}  // namespace

void register_image_commands(CLI::App &app) {
    auto args = std::make_shared<decode_args>();
    CLI::App *cmd = app.add_subcommand(
        "decode",
        "Decode IMAGE (JPEG, PNG, PGM, PPM) upright to 8-bit RGB and write "
        "it as a PNG; with --model, write the network's input instead");
    cmd->add_option("IMAGE", args->input, "Image file to decode")->required();
    cmd->add_option("--out", args->out, "PNG file to write")->required();
    cmd->add_option(
        "--model", args->model,
        "Write the input of this model's network (" + known_models() + ")");
    cmd->callback([args] { run_decode(*args); });
}

}  // namespace facevec::cli
