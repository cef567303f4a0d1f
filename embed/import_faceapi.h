// Import of the face ResNet weights shipped by @vladmandic/face-api
// (TF.js layers format) into a facevec face-resnet weights file.
#pragma once

#include <string>

#include "common/status.h"
#include "embed/weights.h"

namespace facevec::embed {

// The pinned package and the checksum of its model file.
inline constexpr const char *kFaceApiPackage = "@vladmandic/face-api";
inline constexpr const char *kFaceApiVersion = "1.7.15";
inline constexpr const char *kFaceApiModelSha256 =
    "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589";
inline constexpr const char *kFaceApiManifest =
    "face_recognition_model-weights_manifest.json";
inline constexpr const char *kFaceApiModel = "face_recognition_model.bin";

// Reads a TF.js weights manifest and its weight files (named in the
// manifest's "paths", next to the manifest): each group's files are
// concatenated and its tensors lie back to back in manifest order.
// Quantised tensors (uint8 or uint16) are decoded as q * scale + min;
// float32 tensors are read as is. Names and shapes are TF.js's.
// Errors name the file: not_found / io_error, corruption when the data is
// shorter than the manifest says or the JSON is malformed, unsupported
// for another dtype or quantisation.
result<tensor_map> read_tfjs_weights(const std::string &manifest_path);

// Converts face-api's face recognition tensors (TF.js names, HWIO
// kernels, fc as in x out) into facevec's face-resnet weights: kernels
// O x I x H x W as "<layer>/weight", "<layer>/bias", "<layer>/scale",
// "<layer>/shift", and "fc/weight" (128 x 256). mismatch naming the
// tensor when one is missing or misshaped.
result<weights_file> convert_faceapi(const tensor_map &tfjs);

// read_tfjs_weights + convert_faceapi. When `expected_sha256` is not
// empty, the model file must have that SHA-256 (mismatch otherwise).
result<weights_file> import_faceapi(const std::string &manifest_path,
                                    const std::string &expected_sha256);

}  // namespace facevec::embed
