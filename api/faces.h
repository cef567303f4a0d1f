// The photo pipeline: files in, one embedding per face out.
//
// A face_pipeline reads each file once (the bytes give both the content
// hash used for resumable enrollment and the decoded picture), aligns the
// faces (embed/align.h), and embeds the chips in batches (embed/
// embedder.h). Decoding and alignment run on up to compute_threads()
// threads at once; the network runs on the process's compute thread
// (common/threading.h), so concurrent callers never oversubscribe the
// cores.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "embed/align.h"
#include "embed/network.h"

namespace facevec {

struct face_pipeline_options {
    // A built-in model name or the path of a facevec weights file.
    std::string model = "face-resnet";
    embed::precision prec = embed::precision::f32;
    embed::align_mode align = embed::align_mode::detect;
    // No face found: centre crop instead of an error (marked fallback).
    bool center_fallback = false;
    int batch = 32;  // chips per network run
    // Embed each chip and its mirror image and average the two: a cheap
    // gain in accuracy for twice the network work. Part of the
    // fingerprint.
    bool mirror = false;
};

// Which faces of a photo become embeddings.
enum class face_policy {
    exactly_one,  // one face or a per-file error naming the count
    largest,      // the largest face
    central,      // the face the photo is about (embed::choose_central)
    all,          // every face, largest first
};

// Parses "one", "largest", "central", "all".
result<face_policy> parse_face_policy(const std::string &name);

// The options that reproduce the model a fingerprint names, in the form
// face_pipeline::fingerprint() gives: "<arch>-<precision>-<align>-<hash>"
// with "-mirror" appended when mirroring. Other fields keep their
// defaults. invalid_argument names a fingerprint of another form.
result<face_pipeline_options> options_for_fingerprint(std::string fp);

struct face_found {
    embed::face_box box;           // in the decoded (upright) photo's pixels
    std::vector<float> embedding;  // dim() floats
};

// What became of one file. error is ok, or names the file and the reason
// (unreadable, not an image, "no face found", "2 faces found", ...).
struct photo_faces {
    std::string path;
    status error;
    std::string content_hash;  // SHA-256 hex of the file's bytes
    int faces_found = 0;       // faces the detector saw
    bool fallback = false;     // no face: a centre crop was embedded
    std::vector<face_found> faces;
};

// One encoded photo held in memory (JPEG, PNG, PGM or PPM bytes).
struct photo_bytes {
    std::string name;                // stands for the photo in messages
    std::span<const uint8_t> bytes;  // borrowed for the call
};

// Runs fn(i) for every i in [0, n), possibly on several threads, and
// returns once every call has returned.
using parallel_runner =
    std::function<void(size_t n, const std::function<void(size_t)> &fn)>;

struct bytes_options {
    // A decoded photo with more pixels than this fails with
    // resource_exhausted naming its size and the cap, and is never
    // embedded. 0: only the decoder's own cap (embed/image.h).
    uint64_t max_pixels = 0;
    // Runs the decoding and alignment; empty: up to compute_threads()
    // threads started by the call.
    parallel_runner runner;
    // Asked before each photo is decoded and before each network batch;
    // once it returns true the remaining photos are not processed and
    // fail with resource_exhausted ("... not processed: cancelled").
    std::function<bool()> cancelled;
};

class face_pipeline {
  public:
    // Loads the model and, for align_mode::detect, dlib's landmark model.
    // Errors from embed::embedder::load and embed::aligner::create.
    static result<std::unique_ptr<face_pipeline>> create(
        const face_pipeline_options &opts);
    ~face_pipeline();

    // Processes `paths` and returns one entry per path, in order. A bad
    // file never stops the others. Thread-safe.
    std::vector<photo_faces> process(std::span<const std::string> paths,
                                     face_policy policy) const;

    // As process(), for photos in memory: one entry per photo, in order,
    // with path set to its name; errors and content_hash as for a file.
    // A bad photo never stops the others. Thread-safe.
    std::vector<photo_faces> process_bytes(
        std::span<const photo_bytes> photos, face_policy policy,
        const bytes_options &opts = {}) const;

    // The SHA-256 of a file's bytes, as process() records it, without
    // decoding; used to skip files already enrolled. io_error names the
    // file.
    static result<std::string> hash_file(const std::string &path);

    int dim() const;
    bool normalized() const;

    // The decision threshold a new database of this model starts with
    // (squared L2), 0 when the model has none (see README, Embedders).
    float default_threshold() const;
    // The embedder's fingerprint, which names the alignment too.
    const std::string &fingerprint() const;

  private:
    struct impl;
    explicit face_pipeline(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec
