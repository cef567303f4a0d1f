// facevec align: aligns a person-per-folder dataset once and caches the
// chips as PNG under the same relative paths.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/threading.h"
#include "embed/align.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace facevec::cli {
namespace {

namespace fs = std::filesystem;

struct align_args {
    std::string in;
    std::string out;
    int size = embed::align_spec::face_resnet().size;
    double padding = embed::align_spec::face_resnet().padding;
    std::string mode = "auto";
    bool largest = false;
    bool fallback = false;
    bool no_retry = false;
    int threads = 0;
    std::string model = embed::kDefaultLandmarkModel;
};

bool is_image_name(const fs::path &p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) {
        return static_cast<char>(std::tolower(c));
    });
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".pgm" ||
           ext == ".ppm";
}

// Image files under `root`, sorted, as paths relative to it.
result<std::vector<fs::path>> list_images(const std::string &root) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
        return not_found(root + ": not a folder");
    }
    std::vector<fs::path> files;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_regular_file(ec) && is_image_name(it->path())) {
            // Lexical, so a symlinked file keeps its place under root
            // and its chip is written under --out, never beside the
            // link's target.
            files.push_back(it->path().lexically_relative(root));
        }
    }
    if (ec) {
        return io_error(root + ": cannot list: " + ec.message());
    }
    std::sort(files.begin(), files.end());
    return files;
}

// What the workers share: the next file to take and the outcomes.
struct align_run {
    const embed::aligner *aligner = nullptr;
    embed::align_options opts;
    const align_args *args = nullptr;
    const std::vector<fs::path> *files = nullptr;

    std::atomic<size_t> next{0};
    std::atomic<size_t> aligned{0};
    std::atomic<size_t> upsampled{0};
    std::atomic<size_t> fallbacks{0};
    std::mutex failures_mutex;
    std::vector<std::pair<std::string, status>> failures;
    progress *bar = nullptr;
};

// Aligns one file and writes its chip; errors are collected, not fatal.
void align_one(align_run &run, const fs::path &rel) {
    const std::string in = (fs::path(run.args->in) / rel).string();
    fs::path out = fs::path(run.args->out) / rel;
    out.replace_extension(".png");

    status st = status::ok();
    result<embed::alignment> r = run.aligner->align_file(in, run.opts);
    if (r.is_ok()) {
        std::error_code ec;
        fs::create_directories(out.parent_path(), ec);
        st = embed::write_png(r->faces.front().chip, out.string());
        run.upsampled += r->upsampled ? 1 : 0;
        run.fallbacks += r->fallback ? 1 : 0;
    } else {
        st = r.error();
    }
    if (st.is_ok()) {
        ++run.aligned;
    } else {
        std::lock_guard<std::mutex> lock(run.failures_mutex);
        run.failures.emplace_back(rel.string(), st);
    }
    run.bar->advance(1);
}

// Lists the images without a face and the failures on stdout, then a
// summary. Images without a face are an expected outcome; any other
// failure (unreadable file, unwritable chip) sets exit code 1.
void report(align_run &run) {
    std::sort(run.failures.begin(), run.failures.end(),
              [](const auto &a, const auto &b) { return a.first < b.first; });
    size_t no_face = 0;
    for (const auto &[rel, st] : run.failures) {
        if (st.code() == error_code::not_found &&
            st.message().ends_with(": no face found")) {
            ++no_face;
            std::printf("no face\t%s\n", rel.c_str());
        } else {
            std::printf("error\t%s\t%s\n", rel.c_str(), st.to_string().c_str());
        }
    }
    std::printf(
        "aligned %zu of %zu images into %s (%zu found only by the finer "
        "second pass, %zu centre-crop fallbacks); %zu without a face, "
        "%zu errors\n",
        run.aligned.load(), run.files->size(), run.args->out.c_str(),
        run.upsampled.load(), run.fallbacks.load(), no_face,
        run.failures.size() - no_face);
    if (run.failures.size() > no_face) {
        set_exit_code(1);
    }
}

void run_align(const align_args &args) {
    result<embed::align_mode> mode = embed::parse_align_mode(args.mode);
    if (!mode) {
        return fail(mode.error());
    }
    result<std::vector<fs::path>> files = list_images(args.in);
    if (!files) {
        return fail(files.error());
    }
    result<embed::aligner> aligner = embed::aligner::create(args.model);
    if (!aligner) {
        return fail(aligner.error());
    }

    align_run run;
    run.aligner = &aligner.value();
    run.opts.spec = {args.size, args.padding};
    run.opts.mode = mode.value();
    run.opts.choice = args.largest ? embed::face_choice::largest
                                   : embed::face_choice::central;
    run.opts.center_fallback = args.fallback;
    run.opts.upsample_retry = !args.no_retry;
    run.args = &args;
    run.files = &files.value();
    progress bar("align", files->size());
    run.bar = &bar;

    // Alignment is single-threaded per image: one worker per core.
    const int workers = args.threads > 0 ? args.threads : compute_threads();
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w) {
        pool.emplace_back([&run] {
            for (size_t i = run.next++; i < run.files->size(); i = run.next++) {
                align_one(run, (*run.files)[i]);
            }
        });
    }
    for (std::thread &t : pool) {
        t.join();
    }
    bar.finish();
    report(run);
}

}  // namespace

void register_align_commands(CLI::App &app) {
    auto args = std::make_shared<align_args>();
    CLI::App *cmd = app.add_subcommand(
        "align",
        "Detect, landmark and cut the face of every image under DIR into "
        "PNG chips under --out (same relative paths); lists the images "
        "without a face");
    cmd->add_option("DIR", args->in, "Person-per-folder image dataset")
        ->required();
    cmd->add_option("--out", args->out, "Folder for the PNG chips")->required();
    cmd->add_option("--size", args->size, "Chip side in pixels")
        ->capture_default_str();
    cmd->add_option("--padding", args->padding,
                    "Margin around the face (dlib's face-chip padding)")
        ->capture_default_str();
    cmd->add_option("--mode", args->mode,
                    "auto: detect and align; center: centre crop; none: "
                    "inputs already are chips, only resized")
        ->capture_default_str();
    cmd->add_flag("--largest", args->largest,
                  "Keep the largest face instead of the central one");
    cmd->add_flag("--fallback", args->fallback,
                  "Centre-crop images without a face instead of skipping");
    cmd->add_flag("--no-retry", args->no_retry,
                  "No second, finer detection pass when none is found");
    cmd->add_option("--threads", args->threads,
                    "Worker threads (default: FACEVEC_THREADS or the CPUs)");
    cmd->add_option("--model", args->model, "dlib 68-point landmark model")
        ->capture_default_str();
    cmd->callback([args] { run_align(*args); });
}

}  // namespace facevec::cli
