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
// thread pool; without one, image requests answer 501 "unsupported".
#pragma once

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

// Turns encoded images into embeddings of the database's dim. Thread-safe:
// the server calls it from many request threads at once.
class image_embedder {
  public:
    virtual ~image_embedder() = default;

    // The dim of the embeddings it returns.
    virtual uint32_t dim() const = 0;

    // The model fingerprint stored with each embedded face.
    virtual std::string fingerprint() const = 0;

    // One result per image, in order: an embedding of dim() floats, or why
    // that image failed (invalid_argument for undecodable bytes or no
    // face, resource_exhausted above max_pixels). Images above max_pixels
    // pixels must be refused, never embedded.
    virtual std::vector<result<std::vector<float>>> embed(
        std::span<const image_input> images, uint64_t max_pixels) = 0;
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
    int read_timeout_seconds = 30;         // to receive a request
    int write_timeout_seconds = 30;        // to send an answer
    int keep_alive_seconds = 5;            // idle keep-alive connection
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
    // embedder's dim differs from the database's, io_error when the
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
