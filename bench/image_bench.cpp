// Decoding + preprocessing throughput against plain libjpeg-turbo
// decoding of the same bytes, in the same run, on one thread.
//
//   BM_plain_decode/<case>          tjDecompress2 to full-size RGB
//   BM_decode_only/<case>           decode_bytes as below, no preprocess
//   BM_preprocess_only/<case>       preprocess_into of that decoded image
//   BM_resize_only/<case>           resize() of it to 150x150 (8-bit)
//   BM_decode_preprocess/<case>     decode_bytes with the spec's
//                                   min_side (DCT scaling), then
//                                   preprocess_into a 150x150 input
//   BM_decode_preprocess_full/<case> the same at full size (min_side 0)
//
// Cases: 0 = a 250x250 LFW photo (FACEVEC_FACES, default ../shared/faces;
// a synthetic 250x250 JPEG when absent), 1 = a synthetic 1920x1080 JPEG.
// At the end the ratios to the plain decode of the same case are printed.
#include <turbojpeg.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include "embed/image.h"
#include "embed/preprocess.h"

namespace {

namespace fs = std::filesystem;
using facevec::embed::preprocess_spec;

constexpr int kSmallSide = 250;
constexpr int kLargeWidth = 1920;
constexpr int kLargeHeight = 1080;
constexpr int kQuality = 90;
constexpr uint32_t kSeed = 7;
constexpr const char *kModel = "face-resnet";

std::vector<uint8_t> synthetic_jpeg(int width, int height) {
    std::mt19937 rng(kSeed);
    std::uniform_int_distribution<int> jitter(-12, 12);
    std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            uint8_t *p = &rgb[(static_cast<size_t>(y) * width + x) * 3];
            int base[3] = {x * 255 / width, y * 255 / height,
                           (x + y) * 255 / (width + height)};
            for (int c = 0; c < 3; ++c) {
                p[c] = static_cast<uint8_t>(
                    std::clamp(base[c] + jitter(rng), 0, 255));
            }
        }
    }
    tjhandle h = tjInitCompress();
    unsigned char *out = nullptr;
    unsigned long size = 0;
    tjCompress2(h, rgb.data(), width, /*pitch=*/0, height, TJPF_RGB, &out,
                &size, TJSAMP_420, kQuality, /*flags=*/0);
    std::vector<uint8_t> jpeg(out, out + size);
    tjFree(out);
    tjDestroy(h);
    return jpeg;
}

std::vector<uint8_t> lfw_or_synthetic() {
    const char *env = std::getenv("FACEVEC_FACES");
    fs::path faces = env != nullptr && *env != '\0' ? env : "../shared/faces";
    fs::path photo = faces / "lfw" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg";
    std::ifstream in(photo, std::ios::binary);
    if (!in) {
        std::fprintf(stderr,
                     "image_bench: %s not found, using a synthetic "
                     "250x250 JPEG\n",
                     photo.c_str());
        return synthetic_jpeg(kSmallSide, kSmallSide);
    }
    return {std::istreambuf_iterator<char>(in),
            std::istreambuf_iterator<char>()};
}

const std::vector<uint8_t> &jpeg_case(int index) {
    static const std::vector<uint8_t> kSmall = lfw_or_synthetic();
    static const std::vector<uint8_t> kLarge =
        synthetic_jpeg(kLargeWidth, kLargeHeight);
    return index == 0 ? kSmall : kLarge;
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_plain_decode(benchmark::State &state) {
    const std::vector<uint8_t> &jpeg = jpeg_case(state.range(0));
    tjhandle h = tjInitDecompress();
    int width = 0;
    int height = 0;
    int subsampling = 0;
    int colourspace = 0;
    tjDecompressHeader3(h, jpeg.data(), jpeg.size(), &width, &height,
                        &subsampling, &colourspace);
    std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
    for (auto _ : state) {
        int rc = tjDecompress2(h, jpeg.data(), jpeg.size(), rgb.data(), width,
                               /*pitch=*/0, height, TJPF_RGB, /*flags=*/0);
        if (rc != 0)
            state.SkipWithError(tjGetErrorStr2(h));
        benchmark::DoNotOptimize(rgb.data());
    }
    tjDestroy(h);
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(std::to_string(width) + "x" + std::to_string(height));
}

void decode_and_preprocess(benchmark::State &state, bool scaled) {
    const std::vector<uint8_t> &jpeg = jpeg_case(state.range(0));
    const preprocess_spec &spec = *facevec::embed::find_preprocess_spec(kModel);
    facevec::embed::decode_options opts;
    if (scaled)
        opts.min_side = facevec::embed::decode_min_side(spec);
    std::vector<float> input(facevec::embed::input_floats(spec));
    std::string label;
    for (auto _ : state) {
        auto img = facevec::embed::decode_bytes(jpeg, "bench.jpg", opts);
        if (!img.is_ok()) {
            state.SkipWithError(img.error().message().c_str());
            break;
        }
        if (label.empty()) {
            label = "decoded " + std::to_string(img->width) + "x" +
                    std::to_string(img->height);
        }
        if (!facevec::embed::preprocess_into(*img, spec, input).is_ok()) {
            state.SkipWithError("preprocess failed");
            break;
        }
        benchmark::DoNotOptimize(input.data());
    }
    state.SetItemsProcessed(state.iterations());
    state.SetLabel(label);
}

// facevec's decoding alone (libjpeg API, markers, checks), at the size
// decode_preprocess decodes to: what the resize adds is the difference.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_decode_only(benchmark::State &state) {
    const std::vector<uint8_t> &jpeg = jpeg_case(state.range(0));
    const preprocess_spec &spec = *facevec::embed::find_preprocess_spec(kModel);
    facevec::embed::decode_options opts;
    opts.min_side = facevec::embed::decode_min_side(spec);
    for (auto _ : state) {
        auto img = facevec::embed::decode_bytes(jpeg, "bench.jpg", opts);
        if (!img.is_ok()) {
            state.SkipWithError(img.error().message().c_str());
            break;
        }
        benchmark::DoNotOptimize(img->rgb.data());
    }
    state.SetItemsProcessed(state.iterations());
}

// The image decode_only returns for the state's case; nullopt, with the
// benchmark skipped, when it cannot be decoded.
std::optional<facevec::embed::image> decoded_case(benchmark::State &state,
                                                  const preprocess_spec &spec) {
    facevec::embed::decode_options opts;
    opts.min_side = facevec::embed::decode_min_side(spec);
    auto img = facevec::embed::decode_bytes(jpeg_case(state.range(0)),
                                            "bench.jpg", opts);
    if (!img.is_ok()) {
        state.SkipWithError(img.error().message().c_str());
        return std::nullopt;
    }
    return std::move(img).value();
}

// preprocess_into alone, on the image decode_only returns.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_preprocess_only(benchmark::State &state) {
    const preprocess_spec &spec = *facevec::embed::find_preprocess_spec(kModel);
    auto img = decoded_case(state, spec);
    if (!img)
        return;
    std::vector<float> input(facevec::embed::input_floats(spec));
    for (auto _ : state) {
        if (!facevec::embed::preprocess_into(*img, spec, input).is_ok()) {
            state.SkipWithError("preprocess failed");
            break;
        }
        benchmark::DoNotOptimize(input.data());
    }
    state.SetItemsProcessed(state.iterations());
}

// resize() of that decoded image to the spec's size: the 8-bit path
// that shares the vertical pass with preprocess_into.
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_resize_only(benchmark::State &state) {
    const preprocess_spec &spec = *facevec::embed::find_preprocess_spec(kModel);
    auto img = decoded_case(state, spec);
    if (!img)
        return;
    for (auto _ : state) {
        auto resized = facevec::embed::resize(*img, spec.width, spec.height);
        if (!resized.is_ok()) {
            state.SkipWithError("resize failed");
            break;
        }
        benchmark::DoNotOptimize(resized->rgb.data());
    }
    state.SetItemsProcessed(state.iterations());
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_decode_preprocess(benchmark::State &state) {
    decode_and_preprocess(state, /*scaled=*/true);
}

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_decode_preprocess_full(benchmark::State &state) {
    decode_and_preprocess(state, /*scaled=*/false);
}

BENCHMARK(BM_plain_decode)->ArgName("case")->Arg(0)->Arg(1);
BENCHMARK(BM_decode_only)->ArgName("case")->Arg(0)->Arg(1);
BENCHMARK(BM_preprocess_only)->ArgName("case")->Arg(0)->Arg(1);
BENCHMARK(BM_resize_only)->ArgName("case")->Arg(0)->Arg(1);
BENCHMARK(BM_decode_preprocess)->ArgName("case")->Arg(0)->Arg(1);
BENCHMARK(BM_decode_preprocess_full)->ArgName("case")->Arg(0)->Arg(1);

// Prints each benchmark's throughput as a ratio to BM_plain_decode of the
// same case after the usual console table.
class ratio_reporter : public benchmark::ConsoleReporter {
  public:
    void ReportRuns(const std::vector<Run> &runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run &r : runs) {
            auto it = r.counters.find("items_per_second");
            if (it != r.counters.end() && !r.error_occurred) {
                rates_[r.benchmark_name()] = it->second.value;
            }
        }
    }
    void Finalize() override {
        ConsoleReporter::Finalize();
        for (const auto &[name, rate] : rates_) {
            auto slash = name.find('/');
            std::string baseline = "BM_plain_decode" + name.substr(slash);
            auto base = rates_.find(baseline);
            if (base == rates_.end() || name == baseline || !is_rate(name))
                continue;
            std::printf("%-40s %8.0f images/s = %.2fx plain decode\n",
                        name.c_str(), rate, rate / base->second);
        }
    }

  private:
    // A repetition, mean or median; not a spread (stddev, cv), whose
    // ratio means nothing.
    static bool is_rate(const std::string &name) {
        for (const char *spread : {"_stddev", "_cv"}) {
            std::string_view suffix(spread);
            if (name.size() >= suffix.size() &&
                name.compare(name.size() - suffix.size(), suffix.size(),
                             suffix) == 0)
                return false;
        }
        return true;
    }

    std::map<std::string, double> rates_;
};

}  // namespace

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    ratio_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    return 0;
}
