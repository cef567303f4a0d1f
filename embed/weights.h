// facevec weights files: one self-describing file per trained model.
//
// Layout (all integers little-endian):
//   8 bytes   magic "FVWEIGHT"
//   u32       format version (kWeightsFormatVersion)
//   u32       header length in bytes
//   header    JSON: {"architecture": "face-resnet", "params": {...},
//             "tensors": [{"name", "dtype": "f32", "shape": [...],
//             "offset", "bytes"}, ...]}; offsets count from the start of
//             the data section
//   padding   zero bytes up to a multiple of kWeightsAlignment
//   data      the tensors, row-major, each at its offset
//   32 bytes  SHA-256 of every byte before it
//
// Tensor layouts facevec uses: convolution kernels O x I x H x W, inner
// product weights O x I (I in the C x H x W order of the input), vectors
// (bias, scale, shift) of length O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace facevec::embed {

inline constexpr uint32_t kWeightsFormatVersion = 1;
inline constexpr size_t kWeightsAlignment = 64;

// A dense f32 tensor: shape and product(shape) values, row-major.
struct tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;

    // product(shape); 1 for a scalar (empty shape).
    int64_t elements() const;
};

// Tensors by name, e.g. "conv32_1/conv1/weight".
using tensor_map = std::map<std::string, tensor>;

struct weights_file {
    std::string architecture;  // "face-resnet", "vgg16", ...
    nlohmann::json params = nlohmann::json::object();  // per architecture
    tensor_map tensors;
};

// The file's bytes, as write_weights stores them. Deterministic: equal
// contents give equal bytes. invalid_argument when a tensor's data size
// does not match its shape.
result<std::vector<uint8_t>> serialize_weights(const weights_file &w);

// Parses bytes made by serialize_weights. `name` stands for the buffer in
// errors. corruption for a bad magic, truncation, a checksum mismatch or
// an inconsistent header; unsupported for another format version or a
// dtype other than f32.
result<weights_file> parse_weights(const std::vector<uint8_t> &bytes,
                                   const std::string &name);

// Writes `w` to `path` (through a temporary file renamed into place).
// io_error naming the path when it cannot be written.
status write_weights(const std::string &path, const weights_file &w);

// Reads a file written by write_weights. not_found / io_error naming the
// path, then parse_weights' errors prefixed with the path.
result<weights_file> read_weights(const std::string &path);

// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(const uint8_t *bytes, size_t n);

// Lower-case hex SHA-256 of the file at `path`; not_found / io_error.
result<std::string> sha256_file(const std::string &path);

}  // namespace facevec::embed
