#include "embed/weights.h"

#include <openssl/evp.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace facevec::embed {
namespace {

constexpr char kMagic[] = {'F', 'V', 'W', 'E', 'I', 'G', 'H', 'T'};
constexpr size_t kMagicBytes = sizeof(kMagic);
constexpr size_t kChecksumBytes = 32;
constexpr size_t kPreambleBytes = kMagicBytes + 2 * sizeof(uint32_t);
constexpr const char *kDtypeF32 = "f32";

void put_u32(std::vector<uint8_t> &out, uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        out.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
}

uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
        v |= static_cast<uint32_t>(p[i]) << (8 * i);
    }
    return v;
}

size_t align_up(size_t n) {
    return (n + kWeightsAlignment - 1) / kWeightsAlignment * kWeightsAlignment;
}

void sha256(const uint8_t *bytes, size_t n, uint8_t *digest) {
    unsigned int len = 0;
    int ok = EVP_Digest(bytes, n, digest, &len, EVP_sha256(), nullptr);
    FACEVEC_ASSERT(ok == 1 && len == kChecksumBytes, "EVP_Digest failed");
}

// The header's tensor table entry for `t`, whose data starts at `offset`.
nlohmann::json tensor_entry(const std::string &name, const tensor &t,
                            size_t offset) {
    return {{"name", name},
            {"dtype", kDtypeF32},
            {"shape", t.shape},
            {"offset", offset},
            {"bytes", t.data.size() * sizeof(float)}};
}

// Reads one tensor described by `entry` from the data section.
result<tensor> read_tensor(const nlohmann::json &entry, const uint8_t *data,
                           size_t data_bytes, const std::string &name) {
    std::string tname = entry.at("name").get<std::string>();
    std::string dtype = entry.at("dtype").get<std::string>();
    if (dtype != kDtypeF32) {
        return status(error_code::unsupported, name + ": tensor " + tname +
                                                   " has dtype " + dtype +
                                                   " (only f32 is supported)");
    }
    tensor t;
    t.shape = entry.at("shape").get<std::vector<int64_t>>();
    size_t offset = entry.at("offset").get<size_t>();
    size_t bytes = entry.at("bytes").get<size_t>();
    if (t.elements() < 0 ||
        static_cast<size_t>(t.elements()) * sizeof(float) != bytes ||
        offset > data_bytes || bytes > data_bytes - offset) {
        return corruption(name + ": tensor " + tname +
                          " has a size or offset outside the file");
    }
    t.data.resize(t.elements());
    std::memcpy(t.data.data(), data + offset, bytes);
    return t;
}

}  // namespace

int64_t tensor::elements() const {
    int64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0)
            return -1;
        n *= d;
    }
    return n;
}

std::string sha256_hex(const uint8_t *bytes, size_t n) {
    uint8_t digest[kChecksumBytes];
    sha256(bytes, n, digest);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (uint8_t b : digest) {
        s += kHex[b >> 4];
        s += kHex[b & 0xf];
    }
    return s;
}

result<std::string> sha256_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::filesystem::exists(path)
                   ? io_error(path + ": cannot be opened")
                   : not_found(path + ": no such file");
    }
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    return sha256_hex(bytes.data(), bytes.size());
}

result<std::vector<uint8_t>> serialize_weights(const weights_file &w) {
    // The header lists every tensor with its offset in the data section.
    nlohmann::json entries = nlohmann::json::array();
    size_t data_bytes = 0;
    for (const auto &[name, t] : w.tensors) {
        if (t.elements() < 0 ||
            static_cast<size_t>(t.elements()) != t.data.size()) {
            return invalid_argument(
                "tensor " + name + " has " + std::to_string(t.data.size()) +
                " values, its shape needs " + std::to_string(t.elements()));
        }
        entries.push_back(tensor_entry(name, t, data_bytes));
        data_bytes = align_up(data_bytes + t.data.size() * sizeof(float));
    }
    nlohmann::json header = {{"architecture", w.architecture},
                             {"params", w.params},
                             {"tensors", entries}};
    std::string text = header.dump();

    // Preamble, header, padding, data, checksum.
    std::vector<uint8_t> out(kMagic, kMagic + kMagicBytes);
    put_u32(out, kWeightsFormatVersion);
    put_u32(out, static_cast<uint32_t>(text.size()));
    out.insert(out.end(), text.begin(), text.end());
    size_t data_start = align_up(out.size());
    out.resize(data_start + data_bytes, 0);
    for (size_t i = 0; const auto &[name, t] : w.tensors) {
        size_t offset = entries[i++].at("offset").get<size_t>();
        std::memcpy(out.data() + data_start + offset, t.data.data(),
                    t.data.size() * sizeof(float));
    }
    uint8_t digest[kChecksumBytes];
    sha256(out.data(), out.size(), digest);
    out.insert(out.end(), digest, digest + kChecksumBytes);
    return out;
}

result<weights_file> parse_weights(const std::vector<uint8_t> &bytes,
                                   const std::string &name) {
    // Preamble and checksum first: nothing else is trusted before.
    if (bytes.size() < kPreambleBytes + kChecksumBytes ||
        std::memcmp(bytes.data(), kMagic, kMagicBytes) != 0) {
        return corruption(name + ": not a facevec weights file (bad magic)");
    }
    uint32_t version = get_u32(bytes.data() + kMagicBytes);
    if (version != kWeightsFormatVersion) {
        return status(error_code::unsupported,
                      name + ": weights format version " +
                          std::to_string(version) + ", expected " +
                          std::to_string(kWeightsFormatVersion));
    }
    size_t body = bytes.size() - kChecksumBytes;
    uint8_t digest[kChecksumBytes];
    sha256(bytes.data(), body, digest);
    if (std::memcmp(digest, bytes.data() + body, kChecksumBytes) != 0) {
        return corruption(name + ": checksum mismatch (file damaged)");
    }
    size_t header_bytes = get_u32(bytes.data() + kMagicBytes + 4);
    if (header_bytes > body - kPreambleBytes) {
        return corruption(name + ": header runs past the end of the file");
    }

    // Header, then each tensor.
    try {
        auto header = nlohmann::json::parse(
            bytes.begin() + kPreambleBytes,
            bytes.begin() + kPreambleBytes + header_bytes);
        weights_file w;
        w.architecture = header.at("architecture").get<std::string>();
        w.params = header.at("params");
        size_t data_start = align_up(kPreambleBytes + header_bytes);
        if (data_start > body) {
            return corruption(name + ": data section is missing");
        }
        for (const auto &entry : header.at("tensors")) {
            auto t = read_tensor(entry, bytes.data() + data_start,
                                 body - data_start, name);
            if (!t)
                return t.error();
            w.tensors[entry.at("name").get<std::string>()] =
                std::move(t).value();
        }
        return w;
    } catch (const nlohmann::json::exception &e) {
        return corruption(name + ": bad header: " + e.what());
    }
}

status write_weights(const std::string &path, const weights_file &w) {
    auto bytes = serialize_weights(w);
    if (!bytes)
        return bytes.error().with_context(path);
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char *>(bytes->data()),
                  static_cast<std::streamsize>(bytes->size()));
        if (!out.flush()) {
            return io_error(path + ": cannot be written");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec)
        return io_error(path + ": cannot be written: " + ec.message());
    return status::ok();
}

result<weights_file> read_weights(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::filesystem::exists(path)
                   ? io_error(path + ": cannot be opened")
                   : not_found(path + ": no such file");
    }
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    return parse_weights(bytes, path);
}

}  // namespace facevec::embed
