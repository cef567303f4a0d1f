#include "embed/network.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <set>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "common/log.h"

namespace facevec::embed {
namespace {

using dnnl::memory;
using data_type = dnnl::memory::data_type;
using format_tag = dnnl::memory::format_tag;

constexpr const char *kInputName = "input";
constexpr size_t kBufferAlignment = 64;
// Buffer ids that are not activation buffers.
constexpr int kInputBuffer = -1;
constexpr int kOutputBuffer = -2;
constexpr int kDeadBuffer = -3;  // a tensor whose buffer was released
// Layouts a padded tensor may copy from its source, tried in order.
constexpr format_tag kPadLayouts[] = {
    format_tag::nchw,       format_tag::nhwc,   format_tag::nChw16c,
    format_tag::nChw8c,     format_tag::nChw4c, format_tag::chwn,
    format_tag::NChw16n16c,
};
// The cpu_isa bits oneDNN sets when native bf16 instructions exist.
constexpr unsigned kBf16IsaBits =
    static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);

std::string weight_name(const layer_desc &l, const char *what) {
    return l.name + "/" + what;
}

std::string shape_string(const std::vector<int64_t> &s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) {
        out += (i ? ", " : "") + std::to_string(s[i]);
    }
    return out + "]";
}

// Output side of a window of `kernel` with `stride` and padding.
int window_output(int in, const layer_desc &l) {
    int span = in + l.pad_begin + l.pad_end - l.kernel;
    return span < 0 ? 0 : span / l.stride + 1;
}

// An aligned, zero-initialised byte buffer.
struct aligned_buffer {
    std::unique_ptr<uint8_t, decltype(&std::free)> ptr{nullptr, &std::free};
    size_t bytes = 0;

    void allocate(size_t n) {
        size_t rounded = (std::max<size_t>(n, 1) + kBufferAlignment - 1) /
                         kBufferAlignment * kBufferAlignment;
        ptr.reset(static_cast<uint8_t *>(
            std::aligned_alloc(kBufferAlignment, rounded)));
        FACEVEC_ASSERT(ptr != nullptr,
                       "out of memory: " + std::to_string(rounded) +
                           " bytes for activations");
        std::memset(ptr.get(), 0, rounded);
        bytes = rounded;
    }
};

// Where a primitive argument lives: an activation buffer (or the run's
// input/output) seen through a memory descriptor, or a fixed memory.
struct value_ref {
    int buffer = kInputBuffer;
    memory::desc md;
};

struct step {
    dnnl::primitive prim;
    std::vector<std::pair<int, value_ref>> args;
    std::unordered_map<int, memory> fixed;  // weights and biases
    int zero_buffer = -1;                   // pad: cleared before running
    size_t zero_bytes = 0;
    memory::desc scratchpad;
    std::unordered_map<int, memory> bound;  // args bound to buffers
};

// A tensor during planning: where it lives and its layout.
struct planned_tensor {
    value_ref where;
    memory::dims dims;
    int last_use = -1;  // index of the last layer reading it
};

// Activation buffers handed out during planning, reused once free.
class buffer_pool {
  public:
    int acquire(size_t bytes) {
        int best = -1;
        for (int i = 0; i < static_cast<int>(sizes_.size()); ++i) {
            if (busy_[i])
                continue;
            bool fits = sizes_[i] >= bytes;
            if (best < 0 ||
                (fits && (sizes_[best] < bytes || sizes_[i] < sizes_[best])) ||
                (!fits && sizes_[best] < bytes && sizes_[i] > sizes_[best])) {
                best = i;
            }
        }
        if (best < 0) {
            sizes_.push_back(0);
            busy_.push_back(false);
            best = static_cast<int>(sizes_.size()) - 1;
        }
        sizes_[best] = std::max(sizes_[best], bytes);
        busy_[best] = true;
        return best;
    }
    void release(int id) {
        if (id >= 0)
            busy_[id] = false;
    }
    const std::vector<size_t> &sizes() const { return sizes_; }

  private:
    std::vector<size_t> sizes_;
    std::vector<bool> busy_;
};

// The primitives and buffers of one batch size.
struct plan {
    int batch = 0;
    std::vector<step> steps;
    std::vector<aligned_buffer> buffers;
    aligned_buffer scratchpad;
    memory input;   // handle set on each run
    memory output;  // handle set on each run
};

// The plain f32 weights of one layer and their copies in the layouts the
// primitives chose.
struct layer_weights {
    memory weight;
    memory bias;
    std::vector<std::pair<memory::desc, memory>> reordered;
};

// Rows of the final f32 output divided by their L2 norm. The output is n
// short rows, so plain C++ after the last reorder costs nothing measurable.
void l2_normalize_rows(std::span<float> out, int rows, int dim) {
    for (int r = 0; r < rows; ++r) {
        float *row = out.data() + static_cast<size_t>(r) * dim;
        double sum = 0;
        for (int i = 0; i < dim; ++i)
            sum += double{row[i]} * row[i];
        if (sum <= 0)
            continue;
        auto inv = static_cast<float>(1.0 / std::sqrt(sum));
        for (int i = 0; i < dim; ++i)
            row[i] *= inv;
    }
}

status shape_error(const layer_desc &l, const std::string &why) {
    return invalid_argument("layer " + l.name + ": " + why);
}

// Output shape of layer `l` given its operand shapes.
result<tensor_shape> layer_output(const layer_desc &l, const tensor_shape &in,
                                  const tensor_shape *second) {
    tensor_shape out = in;
    switch (l.kind) {
        case layer_kind::conv:
        case layer_kind::max_pool:
        case layer_kind::avg_pool:
            if (l.kernel < 1 || l.stride < 1 || l.pad_begin < 0 ||
                l.pad_end < 0 || l.pad_begin >= l.kernel ||
                l.pad_end >= l.kernel) {
                return shape_error(l, "bad kernel, stride or padding");
            }
            out.height = window_output(in.height, l);
            out.width = window_output(in.width, l);
            if (l.kind == layer_kind::conv)
                out.channels = l.channels;
            break;
        case layer_kind::global_avg_pool:
            out.height = out.width = 1;
            break;
        case layer_kind::pad:
            if (l.channels < in.channels || l.pad_end < 0) {
                return shape_error(l, "padding cannot shrink a tensor");
            }
            out = {l.channels, in.height + l.pad_end, in.width + l.pad_end};
            break;
        case layer_kind::add:
            break;
        case layer_kind::inner_product:
            out = {l.channels, 1, 1};
            break;
    }
    if (out.channels < 1 || out.height < 1 || out.width < 1) {
        return shape_error(l, "output would be empty");
    }
    bool needs_second = l.kind == layer_kind::add;
    if (needs_second && second == nullptr) {
        return shape_error(l, "add needs a second operand");
    }
    if (second != nullptr && !(*second == out)) {
        return shape_error(l, "second operand " + l.second +
                                  " does not match the output shape");
    }
    return out;
}

}  // namespace

const char *precision_name(precision p) {
    return p == precision::bf16 ? "bf16" : "f32";
}

result<precision> parse_precision(const std::string &name) {
    if (name == "f32")
        return precision::f32;
    if (name == "bf16")
        return precision::bf16;
    return invalid_argument("precision '" + name + "': expected f32 or bf16");
}

status check_precision(precision p) {
    if (p == precision::f32)
        return status::ok();
    auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    if ((isa & kBf16IsaBits) == kBf16IsaBits)
        return status::ok();
    char hex[16];
    std::snprintf(hex, sizeof(hex), "0x%x", isa);
    return status(error_code::unsupported,
                  std::string("precision bf16: this CPU has no native bf16 "
                              "support (oneDNN reports ISA ") +
                      hex + "; AVX-512 BF16 or AMX is needed); use f32");
}

result<std::map<std::string, tensor_shape>> infer_shapes(
    const network_desc &d) {
    std::map<std::string, tensor_shape> shapes;
    std::set<std::string> from_inner_product;
    shapes[kInputName] = {d.channels, d.height, d.width};
    if (d.channels < 1 || d.height < 1 || d.width < 1) {
        return invalid_argument(d.architecture + ": input shape is empty");
    }
    std::string previous = kInputName;
    for (const layer_desc &l : d.layers) {
        std::string in = l.input.empty() ? previous : l.input;
        if (l.name.empty() || shapes.count(l.name)) {
            return shape_error(l, "name is empty or used twice");
        }
        if (!shapes.count(in))
            return shape_error(l, "unknown input " + in);
        if (!l.second.empty() && !shapes.count(l.second)) {
            return shape_error(l, "unknown tensor " + l.second);
        }
        if (from_inner_product.count(in) &&
            l.kind != layer_kind::inner_product) {
            return shape_error(l, "only an inner product may follow one");
        }
        const tensor_shape *second =
            l.second.empty() ? nullptr : &shapes[l.second];
        auto out = layer_output(l, shapes[in], second);
        if (!out)
            return out.error();
        shapes[l.name] = *out;
        if (l.kind == layer_kind::inner_product) {
            from_inner_product.insert(l.name);
        }
        previous = l.name;
    }
    if (!d.output.empty() && !shapes.count(d.output)) {
        return invalid_argument(d.architecture + ": unknown output tensor " +
                                d.output);
    }
    return shapes;
}

result<std::vector<weight_spec>> required_weights(const network_desc &d) {
    auto shapes = infer_shapes(d);
    if (!shapes)
        return shapes.error();
    std::vector<weight_spec> specs;
    std::string previous = kInputName;
    for (const layer_desc &l : d.layers) {
        const tensor_shape &in =
            (*shapes)[l.input.empty() ? previous : l.input];
        previous = l.name;
        int64_t o = l.channels;
        if (l.kind == layer_kind::conv) {
            specs.push_back({weight_name(l, "weight"),
                             {o, in.channels, l.kernel, l.kernel}});
            for (const char *v : {"bias", "scale", "shift"}) {
                specs.push_back({weight_name(l, v), {o}, true});
            }
        } else if (l.kind == layer_kind::inner_product) {
            specs.push_back({weight_name(l, "weight"), {o, in.elements()}});
            specs.push_back({weight_name(l, "bias"), {o}, true});
        }
    }
    return specs;
}

struct network::impl {
    network_desc desc;
    precision prec = precision::f32;
    dnnl::engine eng{dnnl::engine::kind::cpu, 0};
    dnnl::stream strm{eng};
    std::map<std::string, tensor_shape> shapes;
    std::string output_name;
    std::vector<std::vector<float>> weight_data;  // owned by layer_weights
    std::vector<layer_weights> weights;           // one per layer
    std::list<plan> plans;                        // most recent first

    data_type act_type() const {
        return prec == precision::bf16 ? data_type::bf16 : data_type::f32;
    }

    status load_weights(const tensor_map &w);
    plan &plan_for(int n);
    void build(plan &p);
    memory weights_in(int layer, const memory::desc &want);
    step reorder_step(const value_ref &from, const value_ref &to);
};

// Folds scale/shift into the kernel and bias of each conv and keeps the
// plain f32 weights of every layer that has some.
status network::impl::load_weights(const tensor_map &w) {
    auto specs = required_weights(desc);
    if (!specs)
        return specs.error();
    for (const weight_spec &s : *specs) {
        auto it = w.find(s.name);
        if (it == w.end()) {
            if (s.optional)
                continue;
            return mismatch(desc.architecture + ": weight " + s.name +
                            " is missing (expected shape " +
                            shape_string(s.shape) + ")");
        }
        if (it->second.shape != s.shape) {
            return mismatch(desc.architecture + ": weight " + s.name +
                            " has shape " + shape_string(it->second.shape) +
                            ", expected " + shape_string(s.shape));
        }
    }

    weights.resize(desc.layers.size());
    for (size_t i = 0; i < desc.layers.size(); ++i) {
        const layer_desc &l = desc.layers[i];
        if (l.kind != layer_kind::conv && l.kind != layer_kind::inner_product) {
            continue;
        }
        const tensor &kernel = w.at(weight_name(l, "weight"));
        std::vector<float> k = kernel.data;
        std::vector<float> b(l.channels, 0.0F);
        auto find = [&](const char *what) -> const tensor * {
            auto it = w.find(weight_name(l, what));
            return it == w.end() ? nullptr : &it->second;
        };
        if (const tensor *bias = find("bias"))
            b = bias->data;
        const tensor *scale = find("scale");
        const tensor *shift = find("shift");
        // y = (conv + b) * scale + shift = conv_{k * scale} + b * scale +
        // shift, per output channel.
        size_t per_out = k.size() / l.channels;
        for (int o = 0; o < l.channels; ++o) {
            float s = scale ? scale->data[o] : 1.0F;
            float t = shift ? shift->data[o] : 0.0F;
            for (size_t j = 0; j < per_out; ++j)
                k[o * per_out + j] *= s;
            b[o] = b[o] * s + t;
        }
        memory::dims wd =
            kernel.shape.size() == 4
                ? memory::dims(kernel.shape.begin(), kernel.shape.end())
                : memory::dims{};
        weight_data.push_back(std::move(k));
        weight_data.push_back(std::move(b));
        auto &kd = weight_data[weight_data.size() - 2];
        auto &bd = weight_data.back();
        memory::desc kmd =
            wd.empty() ? memory::desc({l.channels, kernel.shape[1]},
                                      data_type::f32, format_tag::oi)
                       : memory::desc(wd, data_type::f32, format_tag::oihw);
        weights[i].weight = memory(kmd, eng, kd.data());
        weights[i].bias = memory({{l.channels}, data_type::f32, format_tag::x},
                                 eng, bd.data());
    }
    return status::ok();
}

// The weights of `layer` in layout `want`, reordered once and cached.
memory network::impl::weights_in(int layer, const memory::desc &want) {
    layer_weights &lw = weights[layer];
    if (lw.weight.get_desc() == want)
        return lw.weight;
    for (auto &[md, mem] : lw.reordered) {
        if (md == want)
            return mem;
    }
    memory out(want, eng);
    dnnl::reorder(lw.weight, out).execute(strm, lw.weight, out);
    strm.wait();
    lw.reordered.emplace_back(want, out);
    return out;
}

step network::impl::reorder_step(const value_ref &from, const value_ref &to) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::reorder::primitive_desc pd(eng, from.md, eng, to.md, attr);
    step s;
    s.prim = dnnl::reorder(pd);
    s.args = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    s.scratchpad = pd.scratchpad_desc();
    return s;
}

// Builds the primitives of batch size p.batch: one pass over the layers
// choosing layouts and buffers, then buffers allocated and arguments
// bound.
void network::impl::build(plan &p) {
    const int n = p.batch;
    std::map<std::string, planned_tensor> tensors;
    buffer_pool pool;

    // Liveness: the last layer reading each tensor.
    std::string previous = kInputName;
    std::vector<std::string> inputs;
    for (int i = 0; i < static_cast<int>(desc.layers.size()); ++i) {
        const layer_desc &l = desc.layers[i];
        inputs.push_back(l.input.empty() ? previous : l.input);
        tensors[inputs.back()].last_use = i;
        if (!l.second.empty())
            tensors[l.second].last_use = i;
        previous = l.name;
    }
    tensors[output_name].last_use = static_cast<int>(desc.layers.size());

    const tensor_shape &in_shape = shapes.at(kInputName);
    memory::dims in_dims = {n, in_shape.channels, in_shape.height,
                            in_shape.width};
    tensors[kInputName].where = {
        kInputBuffer, memory::desc(in_dims, data_type::f32, format_tag::nchw)};
    tensors[kInputName].dims = in_dims;

    // A fresh attribute each time: copies of a dnnl::primitive_attr share
    // one underlying object.
    auto make_attr = [](const dnnl::post_ops &ops) {
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        attr.set_post_ops(ops);
        return attr;
    };

    // Moves `t` into layout `want`, adding a reorder when it differs.
    std::vector<int> temporaries;
    auto as_layout = [&](const planned_tensor &t, const memory::desc &want) {
        if (t.where.md == want)
            return t.where;
        value_ref to{pool.acquire(want.get_size()), want};
        temporaries.push_back(to.buffer);
        p.steps.push_back(reorder_step(t.where, to));
        return to;
    };

    for (int i = 0; i < static_cast<int>(desc.layers.size()); ++i) {
        const layer_desc &l = desc.layers[i];
        planned_tensor &src = tensors[inputs[i]];
        const tensor_shape &out_shape = shapes.at(l.name);
        memory::dims out_dims = {n, out_shape.channels, out_shape.height,
                                 out_shape.width};
        planned_tensor out;
        int taken_over = -1;  // buffer inherited from a dead operand
        step s;

        // The output buffer: `second`'s when it dies here and already has
        // the right layout, else a fresh one filled with a copy of it.
        auto output_with = [&](const memory::desc &md, bool copy_second) {
            if (!l.second.empty()) {
                planned_tensor &sec = tensors[l.second];
                if (sec.last_use == i && sec.where.buffer >= 0 &&
                    sec.where.md == md && l.second != inputs[i]) {
                    taken_over = sec.where.buffer;
                    return value_ref{taken_over, md};
                }
            }
            value_ref v{pool.acquire(md.get_size()), md};
            if (copy_second && !l.second.empty()) {
                p.steps.push_back(reorder_step(tensors[l.second].where, v));
            }
            return v;
        };

        if (l.kind == layer_kind::conv) {
            const data_type dt = act_type();
            memory::desc src_any(src.dims, dt, format_tag::any);
            memory::desc w_any({l.channels, src.dims[1], l.kernel, l.kernel},
                               dt, format_tag::any);
            memory::desc b_md({l.channels}, data_type::f32, format_tag::x);
            memory::desc dst_any(out_dims, dt, format_tag::any);
            dnnl::convolution_forward::desc cd(
                dnnl::prop_kind::forward_inference,
                dnnl::algorithm::convolution_direct, src_any, w_any, b_md,
                dst_any, {l.stride, l.stride}, {l.pad_begin, l.pad_begin},
                {l.pad_end, l.pad_end});
            dnnl::post_ops ops;
            if (!l.second.empty())
                ops.append_sum(1.0F);
            if (l.relu) {
                ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F,
                                   0.0F);
            }
            dnnl::primitive_attr attr = make_attr(ops);
            dnnl::convolution_forward::primitive_desc pd(cd, attr, eng);
            value_ref in = as_layout(src, pd.src_desc());
            out.where = output_with(pd.dst_desc(), true);
            s.prim = dnnl::convolution_forward(pd);
            s.args = {{DNNL_ARG_SRC, in}, {DNNL_ARG_DST, out.where}};
            s.fixed[DNNL_ARG_WEIGHTS] = weights_in(i, pd.weights_desc());
            s.fixed[DNNL_ARG_BIAS] = weights[i].bias;
            s.scratchpad = pd.scratchpad_desc();
        } else if (l.kind == layer_kind::max_pool ||
                   l.kind == layer_kind::avg_pool ||
                   l.kind == layer_kind::global_avg_pool) {
            bool global = l.kind == layer_kind::global_avg_pool;
            memory::dims kernel = global
                                      ? memory::dims{src.dims[2], src.dims[3]}
                                      : memory::dims{l.kernel, l.kernel};
            memory::dims strides =
                global ? kernel : memory::dims{l.stride, l.stride};
            memory::dims pb = global ? memory::dims{0, 0}
                                     : memory::dims{l.pad_begin, l.pad_begin};
            memory::dims pe = global ? memory::dims{0, 0}
                                     : memory::dims{l.pad_end, l.pad_end};
            auto alg = l.kind == layer_kind::max_pool
                           ? dnnl::algorithm::pooling_max
                           : dnnl::algorithm::pooling_avg_exclude_padding;
            memory::desc dst_any(out_dims, src.where.md.data_type(),
                                 format_tag::any);
            dnnl::pooling_forward::desc pdesc(
                dnnl::prop_kind::forward_inference, alg, src.where.md, dst_any,
                strides, kernel, pb, pe);
            dnnl::pooling_forward::primitive_desc pd(
                pdesc, make_attr(dnnl::post_ops()), eng);
            out.where = output_with(pd.dst_desc(), false);
            s.prim = dnnl::pooling_forward(pd);
            s.args = {{DNNL_ARG_SRC, src.where}, {DNNL_ARG_DST, out.where}};
            s.scratchpad = pd.scratchpad_desc();
        } else if (l.kind == layer_kind::pad) {
            // Same layout as the source, bigger; the source is copied into
            // its top-left-first-channels corner, the rest stays zero.
            const memory::desc &smd = src.where.md;
            format_tag layout = format_tag::nchw;
            for (format_tag t : kPadLayouts) {
                if (memory::desc(src.dims, smd.data_type(), t) == smd) {
                    layout = t;
                    break;
                }
            }
            memory::desc dst(out_dims, smd.data_type(), layout);
            memory::desc corner =
                dst.submemory_desc(src.dims, memory::dims{0, 0, 0, 0});
            out.where = output_with(dst, false);
            s = reorder_step(src.where, value_ref{out.where.buffer, corner});
            s.zero_buffer = out.where.buffer;
            s.zero_bytes = dst.get_size();
        } else if (l.kind == layer_kind::add) {
            const planned_tensor &b = tensors[l.second];
            dnnl::binary::desc bd(dnnl::algorithm::binary_add, src.where.md,
                                  b.where.md, src.where.md);
            dnnl::post_ops ops;
            if (l.relu) {
                ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F,
                                   0.0F);
            }
            dnnl::primitive_attr attr = make_attr(ops);
            dnnl::binary::primitive_desc pd(bd, attr, eng);
            if (src.last_use == i && src.where.buffer >= 0) {
                taken_over = src.where.buffer;  // in place: dst = src0
                out.where = {taken_over, pd.dst_desc()};
            } else {
                out.where = {pool.acquire(pd.dst_desc().get_size()),
                             pd.dst_desc()};
            }
            s.prim = dnnl::binary(pd);
            s.args = {{DNNL_ARG_SRC_0, src.where},
                      {DNNL_ARG_SRC_1, b.where},
                      {DNNL_ARG_DST, out.where}};
            s.scratchpad = pd.scratchpad_desc();
        } else {
            const data_type dt = act_type();
            bool flat = src.dims.size() == 2;
            memory::dims wdims = flat ? memory::dims{l.channels, src.dims[1]}
                                      : memory::dims{l.channels, src.dims[1],
                                                     src.dims[2], src.dims[3]};
            memory::desc src_any(src.dims, dt, format_tag::any);
            memory::desc w_any(wdims, dt, format_tag::any);
            memory::desc b_md({l.channels}, data_type::f32, format_tag::x);
            memory::desc dst_any({n, l.channels}, dt, format_tag::any);
            dnnl::inner_product_forward::desc ipd(
                dnnl::prop_kind::forward_inference, src_any, w_any, b_md,
                dst_any);
            dnnl::post_ops ops;
            if (l.relu) {
                ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F,
                                   0.0F);
            }
            dnnl::primitive_attr attr = make_attr(ops);
            dnnl::inner_product_forward::primitive_desc pd(ipd, attr, eng);
            value_ref in = as_layout(src, pd.src_desc());
            out.where = {pool.acquire(pd.dst_desc().get_size()), pd.dst_desc()};
            out_dims = {n, l.channels};
            s.prim = dnnl::inner_product_forward(pd);
            s.args = {{DNNL_ARG_SRC, in}, {DNNL_ARG_DST, out.where}};
            // The plain weights are O x (C*H*W); view them with the
            // primitive's dims before reordering.
            memory plain = weights[i].weight;
            if (!flat) {
                weights[i].weight = memory(
                    memory::desc(wdims, data_type::f32, format_tag::oihw), eng,
                    plain.get_data_handle());
            }
            s.fixed[DNNL_ARG_WEIGHTS] = weights_in(i, pd.weights_desc());
            s.fixed[DNNL_ARG_BIAS] = weights[i].bias;
            s.scratchpad = pd.scratchpad_desc();
        }
        p.steps.push_back(std::move(s));
        out.dims = out_dims;
        out.last_use = tensors[l.name].last_use;

        // Free what died here: temporaries and operands read last.
        for (int t : temporaries)
            pool.release(t);
        temporaries.clear();
        for (const std::string &name : {inputs[i], l.second}) {
            if (name.empty())
                continue;
            planned_tensor &t = tensors[name];
            if (t.last_use == i && t.where.buffer != taken_over) {
                pool.release(t.where.buffer);
                t.where.buffer = kDeadBuffer;
            }
        }
        tensors[l.name] = out;
    }

    // The output, reordered into the caller's plain f32 rows.
    const planned_tensor &last = tensors[output_name];
    memory::desc out_md(
        last.dims, data_type::f32,
        last.dims.size() == 2 ? format_tag::nc : format_tag::nchw);
    p.steps.push_back(reorder_step(last.where, {kOutputBuffer, out_md}));

    // Allocate buffers and bind every argument.
    p.buffers.resize(pool.sizes().size());
    for (size_t b = 0; b < pool.sizes().size(); ++b) {
        p.buffers[b].allocate(pool.sizes()[b]);
    }
    size_t scratch = 0;
    for (const step &s : p.steps) {
        scratch = std::max(scratch, s.scratchpad.get_size());
    }
    p.scratchpad.allocate(scratch);
    p.input = memory(tensors[kInputName].where.md, eng, nullptr);
    p.output = memory(out_md, eng, nullptr);
    for (step &s : p.steps) {
        s.bound = s.fixed;
        for (const auto &[arg, v] : s.args) {
            if (v.buffer == kInputBuffer) {
                FACEVEC_ASSERT(v.md == p.input.get_desc(),
                               "input read through another layout");
                s.bound[arg] = p.input;
            } else if (v.buffer == kOutputBuffer) {
                s.bound[arg] = p.output;
            } else {
                s.bound[arg] = memory(v.md, eng, p.buffers[v.buffer].ptr.get());
            }
        }
        s.bound[DNNL_ARG_SCRATCHPAD] =
            memory(s.scratchpad, eng, p.scratchpad.ptr.get());
    }
}

plan &network::impl::plan_for(int n) {
    for (auto it = plans.begin(); it != plans.end(); ++it) {
        if (it->batch == n) {
            plans.splice(plans.begin(), plans, it);
            return plans.front();
        }
    }
    if (plans.size() >= kMaxPlans)
        plans.pop_back();
    plans.emplace_front();
    plans.front().batch = n;
    try {
        build(plans.front());
    } catch (...) {
        plans.pop_front();
        throw;
    }
    logger()->debug("{}: primitives created for batch {} ({})",
                    desc.architecture, n, precision_name(prec));
    return plans.front();
}

network::network(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
network::~network() = default;

result<std::unique_ptr<network>> network::create(const network_desc &d,
                                                 const tensor_map &weights,
                                                 precision p) {
    FACEVEC_RETURN_IF_ERROR(check_precision(p));
    auto shapes = infer_shapes(d);
    if (!shapes)
        return shapes.error();
    try {
        auto im = std::make_unique<impl>();
        im->desc = d;
        im->prec = p;
        im->shapes = std::move(shapes).value();
        im->output_name = d.output.empty()
                              ? (d.layers.empty() ? std::string(kInputName)
                                                  : d.layers.back().name)
                              : d.output;
        FACEVEC_RETURN_IF_ERROR(im->load_weights(weights));
        return std::unique_ptr<network>(new network(std::move(im)));
    } catch (const dnnl::error &e) {
        return status(error_code::internal,
                      d.architecture + ": oneDNN: " + e.what());
    }
}

status network::prepare(int n) {
    if (n < 1)
        return invalid_argument("batch size must be >= 1");
    try {
        impl_->plan_for(n);
        return status::ok();
    } catch (const dnnl::error &e) {
        return status(error_code::internal,
                      impl_->desc.architecture + ": oneDNN: " + e.what());
    }
}

status network::run(std::span<const float> input, int n,
                    std::span<float> output) {
    if (n < 1)
        return invalid_argument("batch size must be >= 1");
    size_t want_in = static_cast<size_t>(n) * input_floats();
    size_t want_out = static_cast<size_t>(n) * output_dim();
    if (input.size() != want_in || output.size() != want_out) {
        return invalid_argument(
            impl_->desc.architecture + ": batch of " + std::to_string(n) +
            " needs " + std::to_string(want_in) + " input and " +
            std::to_string(want_out) + " output floats, got " +
            std::to_string(input.size()) + " and " +
            std::to_string(output.size()));
    }
    try {
        plan &p = impl_->plan_for(n);
        p.input.set_data_handle(const_cast<float *>(input.data()));
        p.output.set_data_handle(output.data());
        for (step &s : p.steps) {
            if (s.zero_buffer >= 0) {
                std::memset(p.buffers[s.zero_buffer].ptr.get(), 0,
                            s.zero_bytes);
            }
            s.prim.execute(impl_->strm, s.bound);
        }
        impl_->strm.wait();
    } catch (const dnnl::error &e) {
        return status(error_code::internal,
                      impl_->desc.architecture + ": oneDNN: " + e.what());
    }
    if (impl_->desc.l2_normalize) {
        l2_normalize_rows(output, n, output_dim());
    }
    return status::ok();
}

const network_desc &network::desc() const {
    return impl_->desc;
}
precision network::prec() const {
    return impl_->prec;
}

int network::input_floats() const {
    return static_cast<int>(impl_->shapes.at(kInputName).elements());
}

int network::output_dim() const {
    return static_cast<int>(impl_->shapes.at(impl_->output_name).elements());
}

std::vector<int> network::prepared_batches() const {
    std::vector<int> out;
    for (const plan &p : impl_->plans)
        out.push_back(p.batch);
    return out;
}

}  // namespace facevec::embed
