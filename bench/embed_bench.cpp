// The executor against bare oneDNN primitives, in the same run.
//
// executor/... runs a whole network through embed::network (reorders,
// residual adds, padding, head included). bare/... runs only the
// network's convolutions (with their fused ReLU) and poolings as oneDNN
// primitives, each on its own preallocated buffers in the layout oneDNN
// picked: the floor the executor is measured against. Each case's two
// runs are registered side by side so they see the same machine load.
// Both report images/s (items_per_second) and GFLOP/s over the
// convolutions and inner products, in process CPU time. Weights are
// seeded random (timing does not depend on their values).
//
// Cases: face ResNet at 150, VGG16 at 224 and 112; batch 1, 8 and 32;
// f32 and bf16. 1-thread figures, repeated (one command line):
//   OMP_NUM_THREADS=1 FACEVEC_THREADS=1 build/bench/embed_bench
//       --benchmark_repetitions=3
// One model: --benchmark_filter=vgg16/224 (names are
// "<executor|bare>/<model>/<side>/batch:<n>/<f32|bf16>").
#include <benchmark/benchmark.h>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "embed/models.h"
#include "embed/network.h"

namespace facevec::embed {
namespace {

constexpr uint64_t kSeed = 7;
constexpr double kGiga = 1e9;
constexpr int kFaceResnet150 = 0;
constexpr int kVgg224 = 1;
constexpr int kVgg112 = 2;

network_desc model_for(int which) {
    if (which == kFaceResnet150)
        return face_resnet_network();
    vgg16_params p;
    p.input_size = which == kVgg224 ? 224 : 112;
    return vgg16_network(p);
}

const char *model_label(int which) {
    return which == kFaceResnet150 ? "face-resnet/150"
           : which == kVgg224      ? "vgg16/224"
                                   : "vgg16/112";
}

// Multiply-adds x 2 of the convolutions and inner products, per image.
double flops_per_image(const network_desc &d) {
    auto shapes = infer_shapes(d);
    double flops = 0;
    std::string prev = "input";
    for (const layer_desc &l : d.layers) {
        const tensor_shape &in = shapes->at(l.input.empty() ? prev : l.input);
        const tensor_shape &out = shapes->at(l.name);
        if (l.kind == layer_kind::conv) {
            flops += 2.0 * out.elements() * in.channels * l.kernel * l.kernel;
        } else if (l.kind == layer_kind::inner_product) {
            flops += 2.0 * out.elements() * in.elements();
        }
        prev = l.name;
    }
    return flops;
}

void set_counters(benchmark::State &state, const network_desc &d, int n) {
    state.SetItemsProcessed(state.iterations() * n);
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops_per_image(d) * n / kGiga,
                           benchmark::Counter::kIsIterationInvariantRate);
}

// Args: model, batch, bf16 (0/1).
// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_Executor(benchmark::State &state) {
    network_desc d = model_for(static_cast<int>(state.range(0)));
    int n = static_cast<int>(state.range(1));
    precision p = state.range(2) ? precision::bf16 : precision::f32;
    if (!check_precision(p).is_ok()) {
        state.SkipWithError("bf16 not supported on this CPU");
        return;
    }
    tensor_map w;
    fill_missing_weights(d, kSeed, w);
    auto net = network::create(d, w, p);
    if (!net) {
        state.SkipWithError(net.error().to_string().c_str());
        return;
    }
    std::vector<float> in(size_t(n) * (*net)->input_floats(), 0.5F);
    std::vector<float> out(size_t(n) * (*net)->output_dim());
    if (!(*net)->run(in, n, out).is_ok()) {  // warm-up: primitives made
        state.SkipWithError("run failed");
        return;
    }
    for (auto _ : state) {
        status st = (*net)->run(in, n, out);
        benchmark::DoNotOptimize(out.data());
        if (!st.is_ok())
            state.SkipWithError(st.to_string().c_str());
    }
    set_counters(state, d, n);
}

// The convolutions and poolings of the network as bare primitives.
struct bare_layer {
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
};

// NOLINTNEXTLINE(readability-identifier-naming): BM_ names.
void BM_BarePrimitives(benchmark::State &state) {
    using dnnl::memory;
    network_desc d = model_for(static_cast<int>(state.range(0)));
    int n = static_cast<int>(state.range(1));
    precision p = state.range(2) ? precision::bf16 : precision::f32;
    if (!check_precision(p).is_ok()) {
        state.SkipWithError("bf16 not supported on this CPU");
        return;
    }
    auto dt =
        p == precision::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    auto shapes = infer_shapes(d);
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream strm(eng);
    std::vector<bare_layer> layers;
    std::string prev = "input";
    for (const layer_desc &l : d.layers) {
        const tensor_shape &in = shapes->at(l.input.empty() ? prev : l.input);
        const tensor_shape &out = shapes->at(l.name);
        prev = l.name;
        memory::dims src{n, in.channels, in.height, in.width};
        memory::dims dst{n, out.channels, out.height, out.width};
        bare_layer b;
        if (l.kind == layer_kind::conv) {
            dnnl::convolution_forward::desc cd(
                dnnl::prop_kind::forward_inference,
                dnnl::algorithm::convolution_direct,
                memory::desc(src, dt, memory::format_tag::any),
                memory::desc({l.channels, in.channels, l.kernel, l.kernel}, dt,
                             memory::format_tag::any),
                memory::desc({l.channels}, memory::data_type::f32,
                             memory::format_tag::x),
                memory::desc(dst, dt, memory::format_tag::any),
                {l.stride, l.stride}, {l.pad_begin, l.pad_begin},
                {l.pad_end, l.pad_end});
            dnnl::post_ops ops;
            if (l.relu) {
                ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F,
                                   0.0F);
            }
            dnnl::primitive_attr attr;
            attr.set_post_ops(ops);
            dnnl::convolution_forward::primitive_desc pd(cd, attr, eng);
            b.prim = dnnl::convolution_forward(pd);
            b.args = {{DNNL_ARG_SRC, memory(pd.src_desc(), eng)},
                      {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), eng)},
                      {DNNL_ARG_BIAS, memory(pd.bias_desc(), eng)},
                      {DNNL_ARG_DST, memory(pd.dst_desc(), eng)}};
        } else if (l.kind == layer_kind::max_pool) {
            memory::desc src_md(src, dt,
                                in.channels % 16 == 0
                                    ? memory::format_tag::nChw16c
                                    : memory::format_tag::nchw);
            dnnl::pooling_forward::desc pdesc(
                dnnl::prop_kind::forward_inference,
                dnnl::algorithm::pooling_max, src_md,
                memory::desc(dst, dt, memory::format_tag::any),
                {l.stride, l.stride}, {l.kernel, l.kernel},
                {l.pad_begin, l.pad_begin}, {l.pad_end, l.pad_end});
            dnnl::pooling_forward::primitive_desc pd(pdesc, eng);
            b.prim = dnnl::pooling_forward(pd);
            b.args = {{DNNL_ARG_SRC, memory(src_md, eng)},
                      {DNNL_ARG_DST, memory(pd.dst_desc(), eng)}};
        } else {
            continue;
        }
        layers.push_back(std::move(b));
    }
    for (auto &b : layers)
        b.prim.execute(strm, b.args);  // warm-up
    strm.wait();
    for (auto _ : state) {
        for (auto &b : layers)
            b.prim.execute(strm, b.args);
        strm.wait();
    }
    set_counters(state, d, n);
}

constexpr double kMinSeconds = 1.0;

// Registers executor and bare runs of every case, side by side.
void register_cases() {
    for (int model : {kFaceResnet150, kVgg224, kVgg112}) {
        for (int batch : {1, 8, 32}) {
            for (int bf16 : {0, 1}) {
                std::string tail = std::string(model_label(model)) +
                                   "/batch:" + std::to_string(batch) +
                                   (bf16 ? "/bf16" : "/f32");
                for (auto [kind, fn] :
                     {std::pair{"executor/", &BM_Executor},
                      std::pair{"bare/", &BM_BarePrimitives}}) {
                    benchmark::RegisterBenchmark((kind + tail).c_str(), fn)
                        ->Args({model, batch, bf16})
                        ->Unit(benchmark::kMillisecond)
                        ->MinTime(kMinSeconds)
                        ->MeasureProcessCPUTime();
                }
            }
        }
    }
}

}  // namespace
}  // namespace facevec::embed

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    facevec::embed::register_cases();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
