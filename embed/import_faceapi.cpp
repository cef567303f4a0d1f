#include "embed/import_faceapi.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "embed/models.h"

namespace facevec::embed {
namespace {

namespace fs = std::filesystem;

result<std::vector<uint8_t>> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return fs::exists(path) ? io_error(path + ": cannot be opened")
                                : not_found(path + ": no such file");
    }
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
}

// Bytes per stored value of a manifest entry, or 0 when unsupported.
size_t stored_bytes(const nlohmann::json &entry, std::string &kind) {
    if (entry.contains("quantization")) {
        kind = entry["quantization"].at("dtype").get<std::string>();
        if (kind == "uint8")
            return 1;
        if (kind == "uint16")
            return 2;
        return 0;
    }
    kind = entry.at("dtype").get<std::string>();
    return kind == "float32" ? 4 : 0;
}

// Decodes `count` values of `entry` starting at `p`.
std::vector<float> decode_values(const nlohmann::json &entry, const uint8_t *p,
                                 size_t count, size_t width) {
    std::vector<float> out(count);
    if (!entry.contains("quantization")) {
        std::memcpy(out.data(), p, count * sizeof(float));
        return out;
    }
    double scale = entry["quantization"].at("scale").get<double>();
    double min = entry["quantization"].at("min").get<double>();
    for (size_t i = 0; i < count; ++i) {
        uint32_t q = p[i * width];
        if (width == 2)
            q |= uint32_t{p[i * width + 1]} << 8;
        out[i] = static_cast<float>(q * scale + min);
    }
    return out;
}

// Transposes an H x W x I x O kernel into O x I x H x W.
tensor hwio_to_oihw(const tensor &t) {
    int64_t h = t.shape[0], w = t.shape[1], in = t.shape[2], o = t.shape[3];
    tensor out;
    out.shape = {o, in, h, w};
    out.data.resize(t.data.size());
    for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
            for (int64_t i = 0; i < in; ++i) {
                for (int64_t k = 0; k < o; ++k) {
                    out.data[((k * in + i) * h + y) * w + x] =
                        t.data[((y * w + x) * in + i) * o + k];
                }
            }
        }
    }
    return out;
}

// Transposes a rows x cols matrix.
tensor transpose(const tensor &t) {
    int64_t r = t.shape[0], c = t.shape[1];
    tensor out;
    out.shape = {c, r};
    out.data.resize(t.data.size());
    for (int64_t i = 0; i < r; ++i) {
        for (int64_t j = 0; j < c; ++j)
            out.data[j * r + i] = t.data[i * c + j];
    }
    return out;
}

}  // namespace

result<tensor_map> read_tfjs_weights(const std::string &manifest_path) {
    auto text = read_file(manifest_path);
    if (!text)
        return text.error();
    fs::path dir = fs::path(manifest_path).parent_path();
    tensor_map out;
    try {
        auto manifest = nlohmann::json::parse(text->begin(), text->end());
        for (const auto &group : manifest) {
            // The group's files, concatenated.
            std::vector<uint8_t> data;
            for (const auto &p : group.at("paths")) {
                auto part = read_file((dir / p.get<std::string>()).string());
                if (!part)
                    return part.error();
                data.insert(data.end(), part->begin(), part->end());
            }
            size_t offset = 0;
            for (const auto &entry : group.at("weights")) {
                std::string name = entry.at("name").get<std::string>();
                std::string kind;
                size_t width = stored_bytes(entry, kind);
                if (width == 0) {
                    return status(error_code::unsupported,
                                  manifest_path + ": tensor " + name +
                                      " is stored as " + kind +
                                      " (float32, uint8 and uint16 are "
                                      "supported)");
                }
                tensor t;
                t.shape = entry.at("shape").get<std::vector<int64_t>>();
                size_t count = static_cast<size_t>(t.elements());
                if (offset + count * width > data.size()) {
                    return corruption(manifest_path + ": tensor " + name +
                                      " runs past the end of the weights");
                }
                t.data =
                    decode_values(entry, data.data() + offset, count, width);
                offset += count * width;
                out[name] = std::move(t);
            }
            if (offset != data.size()) {
                return corruption(manifest_path + ": " +
                                  std::to_string(data.size() - offset) +
                                  " bytes of weights are not in the manifest");
            }
        }
    } catch (const nlohmann::json::exception &e) {
        return corruption(manifest_path + ": malformed manifest: " + e.what());
    }
    return out;
}

result<weights_file> convert_faceapi(const tensor_map &tfjs) {
    weights_file w;
    w.architecture = kFaceResnet;
    auto specs = required_weights(face_resnet_network());
    FACEVEC_ASSERT(specs.is_ok(), specs.error().to_string());

    // facevec name -> face-api name; layers are named alike.
    auto source_of = [](const std::string &name) {
        std::string layer = name.substr(0, name.rfind('/'));
        std::string what = name.substr(name.rfind('/') + 1);
        if (layer == "fc")
            return std::string(what == "weight" ? "fc" : "");
        if (what == "weight")
            return layer + "/conv/filters";
        if (what == "bias")
            return layer + "/conv/bias";
        if (what == "scale")
            return layer + "/scale/weights";
        return layer + "/scale/biases";
    };
    for (const weight_spec &s : *specs) {
        std::string from = source_of(s.name);
        if (from.empty())
            continue;  // the fc layer has no bias
        auto it = tfjs.find(from);
        if (it == tfjs.end()) {
            return mismatch("face-api weights: tensor " + from + " is missing");
        }
        const tensor &t = it->second;
        tensor converted = t;
        if (s.name == "fc/weight" && t.shape.size() == 2) {
            converted = transpose(t);
        } else if (s.shape.size() == 4 && t.shape.size() == 4) {
            converted = hwio_to_oihw(t);
        }
        if (converted.shape != s.shape) {
            return mismatch("face-api weights: tensor " + from +
                            " has an unexpected shape");
        }
        w.tensors[s.name] = std::move(converted);
    }
    return w;
}

result<weights_file> import_faceapi(const std::string &manifest_path,
                                    const std::string &expected_sha256) {
    if (!expected_sha256.empty()) {
        std::string model =
            (fs::path(manifest_path).parent_path() / kFaceApiModel).string();
        auto sum = sha256_file(model);
        if (!sum)
            return sum.error();
        if (*sum != expected_sha256) {
            return mismatch(model + ": sha256 " + *sum + ", expected " +
                            expected_sha256);
        }
    }
    auto tfjs = read_tfjs_weights(manifest_path);
    if (!tfjs)
        return tfjs.error();
    auto w = convert_faceapi(*tfjs);
    if (!w)
        return w.error().with_context(manifest_path);
    return w;
}

}  // namespace facevec::embed
