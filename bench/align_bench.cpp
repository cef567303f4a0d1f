// Face alignment throughput on one core: detection + landmarks + chip for
// a 250 x 250 LFW photo and a 1920 x 1080 JPEG (an LFW face enlarged 3x
// on a larger canvas, written at start into a temp folder), beside the
// baselines measured in the same run: decoding the same file and the
// centre crop (no detection); and the face ResNet embedding one chip,
// so the slowest stage of the pipeline is known.
//
// Run: FACEVEC_THREADS=1 build-x/bench/align_bench
//      [--benchmark_repetitions=3]
// The detection scale of the large photo is swept (max_side) to show
// what the shrink before detection buys.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "embed/align.h"
#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/models.h"

namespace {

namespace fs = std::filesystem;
using facevec::embed::align_mode;
using facevec::embed::align_options;
using facevec::embed::aligner;
using facevec::embed::image;

constexpr const char *kLfwPhoto = "George_W_Bush/George_W_Bush_0001.jpg";

std::string faces_dir() {
    const char *env = std::getenv("FACEVEC_FACES");
    std::string d = env != nullptr ? env : "../shared/faces";
    if (!fs::is_directory(d + "/lfw")) {
        d = "/work/shared/faces";
    }
    return d;
}

// The inputs, made once: the LFW photo and the 1920 x 1080 JPEG.
struct inputs {
    explicit inputs(aligner a) : align(std::move(a)) {}

    std::string lfw_path;
    std::string large_path;
    image lfw;
    image large;
    aligner align;
    std::string error;
    image chip;  // the LFW photo's face chip, for the embedder

    static inputs &get();
};

inputs make_inputs() {
    inputs in(std::move(aligner::create()).value());
    in.lfw_path = faces_dir() + "/lfw/" + kLfwPhoto;
    const fs::path dir = fs::temp_directory_path() / "facevec-align-bench";
    fs::create_directories(dir);
    in.large_path = (dir / "large.jpg").string();

    const std::string script = (dir / "make.py").string();
    std::ofstream(script)
        << "import sys\n"
           "from PIL import Image\n"
           "face = Image.open(sys.argv[1]).convert('RGB')\n"
           "face = face.resize((750, 750), Image.BILINEAR)\n"
           "canvas = Image.new('RGB', (1920, 1080), (96, 110, 120))\n"
           "canvas.paste(face, (1000, 160))\n"
           "canvas.save(sys.argv[2], quality=90)\n";
    const std::string cmd =
        "/usr/bin/python3 " + script + " " + in.lfw_path + " " + in.large_path;
    if (std::system(cmd.c_str()) != 0) {
        in.error = "python3-pil could not write " + in.large_path;
        return in;
    }
    auto lfw = facevec::embed::decode_file(in.lfw_path);
    auto large = facevec::embed::decode_file(in.large_path);
    if (!lfw || !large) {
        in.error = (lfw ? large.error() : lfw.error()).to_string();
        return in;
    }
    in.lfw = std::move(lfw).value();
    in.large = std::move(large).value();
    auto chip = in.align.align(in.lfw, in.lfw_path);
    if (!chip) {
        in.error = chip.error().to_string();
        return in;
    }
    in.chip = chip->faces.front().chip;
    return in;
}

inputs &inputs::get() {
    static inputs in = make_inputs();
    return in;
}

void set_rate(benchmark::State &state) {
    state.counters["images/s"] = benchmark::Counter(
        static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Decoding the file: the baseline every pipeline pays first.
void bm_decode(benchmark::State &state, bool large) {
    inputs &in = inputs::get();
    if (!in.error.empty()) {
        return state.SkipWithError(in.error.c_str());
    }
    const std::string &path = large ? in.large_path : in.lfw_path;
    for (auto _ : state) {
        auto img = facevec::embed::decode_file(path);
        benchmark::DoNotOptimize(img);
    }
    set_rate(state);
}

// The aligner in `mode`; for the large photo, detection runs with the
// longer side shrunk to state.range(0).
void bm_align(benchmark::State &state, bool large, align_mode mode) {
    inputs &in = inputs::get();
    if (!in.error.empty()) {
        return state.SkipWithError(in.error.c_str());
    }
    align_options opts;
    opts.mode = mode;
    opts.detect_max_side = static_cast<int>(state.range(0));
    const image &img = large ? in.large : in.lfw;
    for (auto _ : state) {
        auto r = in.align.align(img, "bench", opts);
        if (!r) {
            return state.SkipWithError(r.error().to_string().c_str());
        }
        benchmark::DoNotOptimize(r);
    }
    set_rate(state);
}

// The next stage: the face ResNet embedding one aligned chip (batch of
// one; run with FACEVEC_THREADS=1 for a one-core figure). Wall time:
// the network runs on the compute thread, not the benchmark's.
void bm_embed_face_resnet(benchmark::State &state) {
    inputs &in = inputs::get();
    if (!in.error.empty()) {
        return state.SkipWithError(in.error.c_str());
    }
    static auto model =
        facevec::embed::embedder::load(facevec::embed::kFaceResnet);
    if (!model) {
        return state.SkipWithError(model.error().to_string().c_str());
    }
    for (auto _ : state) {
        auto v = (*model)->embed_one(in.chip, "chip");
        benchmark::DoNotOptimize(v);
    }
    set_rate(state);
}

constexpr int kDefaultMaxSide = align_options{}.detect_max_side;

BENCHMARK_CAPTURE(bm_decode, lfw_250, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_align, lfw_250_center, false, align_mode::center)
    ->Arg(kDefaultMaxSide)
    ->ArgName("max_side")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_align, lfw_250_detect, false, align_mode::detect)
    ->Arg(kDefaultMaxSide)
    ->ArgName("max_side")
    ->Unit(benchmark::kMillisecond);

BENCHMARK(bm_embed_face_resnet)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(bm_decode, jpeg_1920x1080, true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_align, jpeg_1920x1080_center, true, align_mode::center)
    ->Arg(kDefaultMaxSide)
    ->ArgName("max_side")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_align, jpeg_1920x1080_detect, true, align_mode::detect)
    ->ArgName("max_side")
    ->Arg(640)
    ->Arg(kDefaultMaxSide)
    ->Arg(1920)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
