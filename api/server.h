// facevec's HTTP server: a JSON API under /v1 over one engine.
//
// HTTP/1.1 by cpp-httplib. Every /v1 endpoint wants "Authorization: Bearer
// KEY" when keys are configured; read-only keys may only read. GET /healthz
// and GET /metrics (Prometheus text format) need no key. Errors are JSON
// {"code": ..., "message": ..., "item": index or null}; the shapes of every
// request and answer are in api/openapi.json.
//
// Threads: httplib's pool serves connections; queries run concurrently,
// the engine serialises writes and applies each batch atomically. Images
// are embedded by an injected image_embedder, which owns its bounded
// thread pool; without one, image requests answer 501 "unsupported". An
// image query answers, per face found, the object `facevec query IMAGE`
// prints: {"input", "fallback"?, "box", "query", "person", "distance",
// "top"}.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "api/engine.h"
#include "common/status.h"

namespace facevec::api {

// One encoded image (JPEG, PNG, PGM or PPM bytes) from a request.
struct image_input {
    std::span<const uint8_t> bytes;  // borrowed for the call
    std::string name;                // for messages: "item 3" or a filename
};

// One face found in an image.
struct image_face {
    // left, top, right, bottom, in the upright image's pixels.
    std::array<float, 4> box{};
    bool fallback = false;         // no face found: the centre crop
    std::vector<float> embedding;  // dim() floats
};

// What one image gave.
struct embedded_image {
    std::string content_hash;       // SHA-256 hex of the bytes
    std::vector<image_face> faces;  // at least one
};

// What the faces are for: enroll wants exactly one face per image (the
// embedder's policy picks or refuses), query wants every face.
enum class image_purpose { enroll, query };

struct embed_limits {
    // Images above this many pixels are refused, never embedded.
    uint64_t max_pixels = 0;
    // Past it the embedder may stop early; the server then discards the
    // results and answers 503 deadline_exceeded.
    std::chrono::steady_clock::time_point deadline =
        std::chrono::steady_clock::time_point::max();
};

// Turns encoded images into embeddings of the database's dim. Thread-safe:
// the server calls it from many request threads at once, and the
// implementation bounds the threads it uses however many callers there
// are.
class image_embedder {
  public:
    virtual ~image_embedder() = default;

    // The dim of the embeddings it returns.
    virtual uint32_t dim() const = 0;

    // The model fingerprint stored with each embedded face.
    virtual std::string fingerprint() const = 0;

    // One result per image, in order: its faces, or why that image
    // failed, the message naming the image: invalid_argument (no face,
    // too many faces, too small), corruption (undecodable bytes),
    // unsupported (another format), resource_exhausted (above
    // limits.max_pixels, or not processed past limits.deadline).
    virtual std::vector<result<embedded_image>> embed(
        std::span<const image_input> images, image_purpose purpose,
        const embed_limits &limits) = 0;
};

// An API key from the keys file.
struct api_key {
    std::string key;
    bool read_only = false;
};

// Reads a keys file: one key per line, optionally followed by the word
// "read-only"; blank lines and lines starting with '#' are skipped. Errors
// name the file and line (io_error when unreadable, invalid_argument for a
// malformed line); a file without keys is an error too.
result<std::vector<api_key>> read_keys_file(const std::string &path);

// True for "localhost", 127.0.0.0/8 and ::1.
bool is_loopback_host(const std::string &host);

// Limits; a request over one gets a 4xx JSON error and the server stays
// up.
struct server_limits {
    size_t max_body_bytes = 32u << 20;     // 413 resource_exhausted
    size_t max_items = 10000;              // vectors per request, 413
    size_t max_images = 32;                // images per request, 413
    uint64_t max_image_pixels = 40000000;  // per image, 413
    int max_k = 1000;                      // 400 invalid_argument
    size_t max_list_limit = 10000;         // persons per page, 400
    // Seconds from routing to answer; a request over it answers 503
    // deadline_exceeded (checked before any write and after embedding, so
    // an acknowledged write is never refused late). 0: no limit.
    double request_timeout_seconds = 30;
    int read_timeout_seconds = 30;   // to receive a request
    int write_timeout_seconds = 30;  // to send an answer
    int keep_alive_seconds = 5;      // idle keep-alive connection
};

struct server_options {
    std::string host = "127.0.0.1";
    int port = 0;  // 0: any free port, see server::port()
    // Empty: no authentication, which start() allows on loopback only.
    std::vector<api_key> keys;
    server_limits limits;
    // httplib's pool. Each worker serves one connection at a time, so this
    // bounds the connections served concurrently; others wait queued.
    size_t http_threads = 64;
    // Null: image requests answer 501 unsupported.
    std::shared_ptr<image_embedder> embedder;
};

// A route: its method and its path as written in the OpenAPI document
// ("/v1/persons/{person}").
struct route_info {
    std::string method;
    std::string path;
    bool writes = false;  // refused to read-only keys
};

class server {
  public:
    // Checks the options and binds the address. Errors: invalid_argument
    // for a non-loopback host without keys or bad limits, mismatch when the
    // embedder's dim differs from the database's or its fingerprint from
    // a database's non-empty one, io_error when the
    // address cannot be bound. `db` must outlive the server.
    static result<std::unique_ptr<server>> start(engine &db,
                                                 server_options options);
    ~server();

    // The bound port (the chosen one when options.port was 0).
    int port() const;

    // Serves until stop(); returns once accepting has stopped and every
    // in-flight request has been answered. Call once.
    status run();

    // Stops accepting and lets run() drain and return. Thread-safe; not
    // async-signal-safe (call it from a thread that waited for the
    // signal).
    void stop();

    // Every route served, for the OpenAPI check.
    static std::vector<route_info> routes();

  private:
    struct impl;
    explicit server(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace facevec::api
