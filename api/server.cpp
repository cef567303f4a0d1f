#include "api/server.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <nlohmann/json.hpp>

#include "api/json.h"
#include "common/log.h"

namespace facevec::api {
namespace {

using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

// Keys shorter than this are refused: they could be guessed.
constexpr size_t kMinKeyBytes = 16;
constexpr std::string_view kReadOnlyWord = "read-only";
constexpr std::string_view kBearerPrefix = "Bearer ";

// A day: longer request limits are refused (and could overflow the
// clock's nanoseconds).
constexpr double kMaxRequestTimeoutSeconds = 24 * 60 * 60;

constexpr int kDefaultK = 5;
constexpr size_t kDefaultListLimit = 100;

// How long stop() waits between checks for run() to start listening.
constexpr auto kStopPollInterval = std::chrono::milliseconds(1);

// HTTP status codes the API answers with.
constexpr int kOk = 200;
constexpr int kBadRequest = 400;
constexpr int kUnauthorized = 401;
constexpr int kForbidden = 403;
constexpr int kNotFound = 404;
constexpr int kConflict = 409;
constexpr int kPayloadTooLarge = 413;
constexpr int kLengthRequired = 411;
constexpr int kUnsupportedMediaType = 415;
constexpr int kInternalError = 500;
constexpr int kNotImplemented = 501;
constexpr int kUnavailable = 503;

// Serialises an answer. Strings from a request (a multipart file name,
// a label) may hold invalid UTF-8: replaced, never an exception.
std::string dump_json(const json &j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Latency buckets in seconds, from a cached small query to a large batch.
const std::vector<double> kLatencyBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                             0.025,  0.05,  0.1,    0.25,  0.5,
                                             1,      2.5,   5,      10};

// An error answer: the HTTP status and the JSON error object.
struct api_error {
    int http = kBadRequest;
    std::string code;
    std::string message;
    std::optional<size_t> item;
};

// What a handler answers: a JSON body with a status.
struct reply {
    int http = kOk;
    json body;
};

int http_status_of(error_code code) {
    switch (code) {
        case error_code::ok:
            return kOk;
        case error_code::invalid_argument:
        case error_code::mismatch:
            return kBadRequest;
        case error_code::not_found:
            return kNotFound;
        case error_code::already_exists:
            return kConflict;
        case error_code::unsupported:
            return kNotImplemented;
        case error_code::resource_exhausted:
            return kPayloadTooLarge;
        case error_code::in_use:
            return kUnavailable;
        case error_code::corruption:
        case error_code::io_error:
        case error_code::internal:
            return kInternalError;
    }
    return kInternalError;
}

api_error error_from(const status &s, std::optional<size_t> item = {}) {
    return {http_status_of(s.code()), error_code_name(s.code()), s.message(),
            item};
}

api_error bad_request(std::string message, std::optional<size_t> item = {}) {
    return {kBadRequest, error_code_name(error_code::invalid_argument),
            std::move(message), item};
}

api_error too_large(std::string message, std::optional<size_t> item = {}) {
    return {kPayloadTooLarge, error_code_name(error_code::resource_exhausted),
            std::move(message), item};
}

reply error_reply(const api_error &e) {
    json body;
    body["code"] = e.code;
    body["message"] = e.message;
    body["item"] = e.item ? json(*e.item) : json(nullptr);
    return {e.http, std::move(body)};
}

// ---- API keys ----

using key_digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

key_digest digest_of(std::string_view text) {
    key_digest d{};
    SHA256(reinterpret_cast<const unsigned char *>(text.data()), text.size(),
           d.data());
    return d;
}

struct stored_key {
    key_digest digest;
    bool read_only = false;
};

// ---- request bodies ----

// Decodes standard base64 (with padding); nullopt when malformed.
std::optional<std::string> decode_base64(std::string_view text) {
    constexpr size_t kQuantum = 4;
    constexpr size_t kQuantumBytes = 3;
    if (text.empty() || text.size() % kQuantum != 0 ||
        text.size() > static_cast<size_t>(INT_MAX)) {
        return std::nullopt;
    }
    std::string out(text.size() / kQuantum * kQuantumBytes, '\0');
    int n =
        EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                        reinterpret_cast<const unsigned char *>(text.data()),
                        static_cast<int>(text.size()));
    if (n < 0)
        return std::nullopt;

    // EVP_DecodeBlock counts the padding as zero bytes.
    size_t padding = 0;
    for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) {
        ++padding;
    }
    constexpr size_t kMaxPadding = 2;
    if (padding > kMaxPadding)
        return std::nullopt;
    out.resize(static_cast<size_t>(n) - padding);
    return out;
}

// A request's faces: each item is a vector or an encoded image.
struct batch {
    std::vector<std::string> persons;         // enroll only
    std::vector<std::string> sources;         // enroll only
    std::vector<std::vector<float>> vectors;  // empty for an image item
    std::vector<std::string> images;  // encoded bytes; empty for a vector
    std::vector<std::string> names;   // an image's name in messages
    std::vector<bool> is_image;
    // Filled by embed_images for image items.
    std::vector<embedded_image> embedded;

    size_t size() const { return is_image.size(); }
    size_t image_count() const {
        return static_cast<size_t>(
            std::count(is_image.begin(), is_image.end(), true));
    }
    void add_vector(std::vector<float> v) {
        vectors.push_back(std::move(v));
        images.emplace_back();
        names.emplace_back();
        is_image.push_back(false);
    }
    // `name`: the file name of a form file, else "" for "item N".
    void add_image(std::string bytes, const std::string &name = "") {
        names.push_back(name.empty() ? "item " + std::to_string(size()) : name);
        vectors.emplace_back();
        images.push_back(std::move(bytes));
        is_image.push_back(true);
    }
};

// Reads a JSON array of numbers as floats; the message names the item.
std::optional<api_error> parse_vector(const json &j, size_t item,
                                      std::vector<float> &out) {
    if (!j.is_array()) {
        return bad_request(
            "item " + std::to_string(item) + ": vector is not an array", item);
    }
    out.resize(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_number()) {
            return bad_request("item " + std::to_string(item) + ": vector[" +
                                   std::to_string(i) + "] is not a number",
                               item);
        }
        out[i] = static_cast<float>(j[i].get<double>());
        if (!std::isfinite(out[i])) {
            return bad_request("item " + std::to_string(item) + ": vector[" +
                                   std::to_string(i) +
                                   "] is not a finite float",
                               item);
        }
    }
    return std::nullopt;
}

std::optional<api_error> parse_image(const json &j, size_t item, batch &out) {
    if (!j.is_string()) {
        return bad_request(
            "item " + std::to_string(item) + ": image is not a base64 string",
            item);
    }
    std::optional<std::string> bytes =
        decode_base64(j.get_ref<const std::string &>());
    if (!bytes) {
        return bad_request(
            "item " + std::to_string(item) + ": image is not valid base64",
            item);
    }
    out.add_image(std::move(*bytes));
    return std::nullopt;
}

std::optional<api_error> parse_json_body(const std::string &body, json &out) {
    try {
        out = json::parse(body);
    } catch (const json::exception &e) {
        // parse_error, and out_of_range for a number beyond double.
        return bad_request(std::string("body is not valid JSON: ") + e.what());
    }
    if (!out.is_object())
        return bad_request("body is not a JSON object");
    return std::nullopt;
}

// An optional string member; error when present with another type.
std::optional<api_error> optional_string(const json &obj,
                                         const std::string &key, size_t item,
                                         std::string &out) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
        return std::nullopt;
    if (!it->is_string()) {
        return bad_request(
            "item " + std::to_string(item) + ": " + key + " is not a string",
            item);
    }
    out = it->get<std::string>();
    return std::nullopt;
}

// {"items": [{"person", "vector" | "image", "source"?}, ...]}.
std::optional<api_error> parse_enroll_json(const json &body, batch &out) {
    auto items = body.find("items");
    if (items == body.end() || !items->is_array()) {
        return bad_request("body has no \"items\" array");
    }
    if (items->empty())
        return bad_request("\"items\" is empty");
    for (size_t i = 0; i < items->size(); ++i) {
        const json &it = (*items)[i];
        if (!it.is_object()) {
            return bad_request(
                "item " + std::to_string(i) + ": not a JSON object", i);
        }
        std::string person;
        std::string source;
        if (!it.contains("person")) {
            return bad_request(
                "item " + std::to_string(i) + ": person is missing", i);
        }
        if (auto e = optional_string(it, "person", i, person))
            return e;
        if (auto e = optional_string(it, "source", i, source))
            return e;
        out.persons.push_back(std::move(person));
        out.sources.push_back(std::move(source));

        bool has_vector = it.contains("vector");
        bool has_image = it.contains("image");
        if (has_vector == has_image) {
            return bad_request("item " + std::to_string(i) +
                                   ": give exactly one of vector and image",
                               i);
        }
        if (has_image) {
            if (auto e = parse_image(it["image"], i, out))
                return e;
        } else {
            std::vector<float> v;
            if (auto e = parse_vector(it["vector"], i, v))
                return e;
            out.add_vector(std::move(v));
        }
    }
    return std::nullopt;
}

// multipart/form-data: one "person" field and files under "images"; each
// file's name is its source.
std::optional<api_error> parse_enroll_form(const httplib::Request &req,
                                           batch &out) {
    if (!req.has_file("person")) {
        return bad_request("form has no \"person\" field");
    }
    if (req.files.count("person") > 1) {
        return bad_request(
            "form has more than one \"person\" field: send one per request");
    }
    std::string person = req.get_file_value("person").content;
    auto [begin, end] = req.files.equal_range("images");
    for (auto it = begin; it != end; ++it) {
        out.persons.push_back(person);
        out.sources.push_back(it->second.filename);
        out.add_image(it->second.content, it->second.filename);
    }
    if (out.size() == 0)
        return bad_request("form has no \"images\" files");
    return std::nullopt;
}

struct query_params {
    int k = kDefaultK;
    std::optional<float> threshold;
};

std::optional<api_error> parse_k(const json &j, int max_k, int &k) {
    if (!j.is_number_integer())
        return bad_request("k is not an integer");
    int64_t v = j.get<int64_t>();
    if (v < 1 || v > max_k) {
        return bad_request("k is " + std::to_string(v) + ", must be in 1.." +
                           std::to_string(max_k));
    }
    k = static_cast<int>(v);
    return std::nullopt;
}

std::optional<api_error> parse_threshold(const json &j,
                                         std::optional<float> &out) {
    if (j.is_null())
        return std::nullopt;
    float t = j.is_number() ? static_cast<float>(j.get<double>()) : -1;
    if (!j.is_number() || !std::isfinite(t) || t <= 0) {
        return bad_request("threshold is not a finite number > 0");
    }
    out = t;
    return std::nullopt;
}

// {"vectors": [[...], ...]} or {"images": ["base64", ...]}, "k"?,
// "threshold"?.
std::optional<api_error> parse_query_json(const json &body, int max_k,
                                          batch &out, query_params &p) {
    auto vectors = body.find("vectors");
    auto images = body.find("images");
    if ((vectors == body.end()) == (images == body.end())) {
        return bad_request("give exactly one of \"vectors\" and \"images\"");
    }
    const json &list = vectors != body.end() ? *vectors : *images;
    if (!list.is_array() || list.empty()) {
        return bad_request(
            "\"vectors\" or \"images\" is not a non-empty "
            "array");
    }
    for (size_t i = 0; i < list.size(); ++i) {
        if (images != body.end()) {
            if (auto e = parse_image(list[i], i, out))
                return e;
            continue;
        }
        std::vector<float> v;
        if (auto e = parse_vector(list[i], i, v))
            return e;
        out.add_vector(std::move(v));
    }

    if (auto it = body.find("k"); it != body.end()) {
        if (auto e = parse_k(*it, max_k, p.k))
            return e;
    }
    if (auto it = body.find("threshold"); it != body.end()) {
        if (auto e = parse_threshold(*it, p.threshold))
            return e;
    }
    return std::nullopt;
}

// multipart/form-data: files under "images", optional "k" and
// "threshold" fields.
std::optional<api_error> parse_query_form(const httplib::Request &req,
                                          int max_k, batch &out,
                                          query_params &p) {
    auto [begin, end] = req.files.equal_range("images");
    for (auto it = begin; it != end; ++it)
        out.add_image(it->second.content, it->second.filename);
    if (out.size() == 0)
        return bad_request("form has no \"images\" files");

    for (const char *field : {"k", "threshold"}) {
        if (!req.has_file(field))
            continue;
        json value = json::parse(req.get_file_value(field).content, nullptr,
                                 /*allow_exceptions=*/false);
        auto e = std::string_view(field) == "k"
                     ? parse_k(value, max_k, p.k)
                     : parse_threshold(value, p.threshold);
        if (e)
            return e;
    }
    return std::nullopt;
}

bool is_form(const httplib::Request &req) {
    return req.is_multipart_form_data();
}

std::optional<api_error> check_content_type(const httplib::Request &req) {
    std::string type = req.get_header_value("Content-Type");
    if (type.empty() || type.starts_with("application/json") || is_form(req)) {
        return std::nullopt;
    }
    return api_error{kUnsupportedMediaType,
                     error_code_name(error_code::unsupported),
                     "content type " + type +
                         " is not application/json or "
                         "multipart/form-data",
                     std::nullopt};
}

// A face's answer as `facevec query IMAGE` prints it: "input", "fallback"
// (only when set), "box", then to_json's keys.
json face_result(const std::string &input, const image_face &face,
                 const query_answer &answer, size_t query_index) {
    json j;
    j["input"] = input;
    if (face.fallback)
        j["fallback"] = "center crop";
    j["box"] = json::array();
    for (float v : face.box)
        j["box"].push_back(json_number(v));
    json fields = to_json(answer, query_index);
    for (auto &[key, value] : fields.items())
        j[key] = value;
    return j;
}

// ---- routes ----

enum class route_id {
    healthz,
    metrics,
    enroll,
    query,
    list_persons,
    remove_person,
    remove_face,
    stats,
};

struct route_def {
    route_id id;
    const char *method;
    const char *path;     // as in the OpenAPI document
    const char *pattern;  // httplib's regex
    bool writes;
    bool needs_key;
};

constexpr route_def kRoutes[] = {
    {route_id::healthz, "GET", "/healthz", "/healthz", false, false},
    {route_id::metrics, "GET", "/metrics", "/metrics", false, false},
    {route_id::enroll, "POST", "/v1/enroll", "/v1/enroll", true, true},
    {route_id::query, "POST", "/v1/query", "/v1/query", false, true},
    {route_id::list_persons, "GET", "/v1/persons", "/v1/persons", false, true},
    {route_id::remove_person, "DELETE", "/v1/persons/{person}",
     "/v1/persons/(.+)", true, true},
    {route_id::remove_face, "DELETE", "/v1/faces/{face}", "/v1/faces/([^/]+)",
     true, true},
    {route_id::stats, "GET", "/v1/stats", "/v1/stats", false, true},
};

// The endpoint label of requests that matched no route.
constexpr const char *kNoRoute = "none";

}  // namespace

// ---- free functions ----

result<std::vector<api_key>> read_keys_file(const std::string &path) {
    std::ifstream in(path);
    if (!in)
        return io_error(path + ": cannot read the keys file");

    std::vector<api_key> keys;
    std::string line;
    for (size_t number = 1; std::getline(in, line); ++number) {
        std::istringstream words(line);
        std::string key;
        std::string flag;
        std::string extra;
        words >> key >> flag >> extra;
        if (key.empty() || key.starts_with('#'))
            continue;

        std::string where = path + " line " + std::to_string(number) + ": ";
        if (!extra.empty() || (!flag.empty() && flag != kReadOnlyWord)) {
            return invalid_argument(where +
                                    "expected \"KEY\" or \"KEY read-only\"");
        }
        if (key.size() < kMinKeyBytes) {
            return invalid_argument(where + "key is shorter than " +
                                    std::to_string(kMinKeyBytes) +
                                    " characters");
        }
        // The same key twice could grant write and read-only at once.
        for (const api_key &k : keys) {
            if (k.key == key)
                return invalid_argument(where + "key listed twice");
        }
        keys.push_back({key, flag == kReadOnlyWord});
    }
    if (keys.empty())
        return invalid_argument(path + ": holds no keys");
    return keys;
}

bool is_loopback_host(const std::string &host) {
    if (host == "localhost" || host == "::1" || host == "[::1]")
        return true;
    in_addr addr{};
    if (inet_pton(AF_INET, host.c_str(), &addr) != 1)
        return false;
    constexpr uint32_t kLoopbackNet = 127;
    constexpr int kNetShift = 24;
    return (ntohl(addr.s_addr) >> kNetShift) == kLoopbackNet;
}

// ---- server ----

struct server::impl {
    engine &db;
    server_options options;
    std::vector<stored_key> keys;
    httplib::Server http;
    int port = 0;
    std::atomic<bool> stop_requested{false};
    std::atomic<bool> running{false};

    // Metrics.
    std::shared_ptr<prometheus::Registry> registry =
        std::make_shared<prometheus::Registry>();
    prometheus::Family<prometheus::Counter> &requests =
        prometheus::BuildCounter()
            .Name("facevec_http_requests_total")
            .Help("HTTP requests answered, by endpoint, method and status")
            .Register(*registry);
    prometheus::Family<prometheus::Histogram> &latency =
        prometheus::BuildHistogram()
            .Name("facevec_http_request_duration_seconds")
            .Help("Time from routing to answer, by endpoint")
            .Register(*registry);
    prometheus::Counter &images_embedded =
        prometheus::BuildCounter()
            .Name("facevec_images_embedded_total")
            .Help("Images turned into embeddings")
            .Register(*registry)
            .Add({});
    prometheus::Gauge &faces_stored = prometheus::BuildGauge()
                                          .Name("facevec_faces_stored")
                                          .Help("Faces in the database")
                                          .Register(*registry)
                                          .Add({});
    prometheus::Gauge &persons_stored = prometheus::BuildGauge()
                                            .Name("facevec_persons_stored")
                                            .Help("Persons in the database")
                                            .Register(*registry)
                                            .Add({});
    prometheus::Histogram &query_latency =
        prometheus::BuildHistogram()
            .Name("facevec_query_duration_seconds")
            .Help("Engine search time per query request")
            .Register(*registry)
            .Add({}, kLatencyBuckets);

    impl(engine &e, server_options o) : db(e), options(std::move(o)) {}

    void install_routes();
    void install_route(const route_def &r);
    std::optional<api_error> authorize(const httplib::Request &req,
                                       const route_def &r) const;
    void count(const char *endpoint, const char *method, int http,
               clock_type::time_point start);
    reply dispatch(route_id id, const httplib::Request &req,
                   clock_type::time_point deadline);

    reply healthz();
    reply metrics();
    reply enroll(const httplib::Request &req, clock_type::time_point deadline);
    reply query(const httplib::Request &req, clock_type::time_point deadline);
    reply list_persons(const httplib::Request &req);
    reply remove_person(const httplib::Request &req);
    reply remove_face(const httplib::Request &req);
    reply stats();

    std::optional<api_error> check_counts(const batch &b) const;
    std::optional<api_error> embed_images(batch &b, image_purpose purpose,
                                          clock_type::time_point deadline);
    clock_type::time_point deadline_from(clock_type::time_point start) const;
    std::optional<api_error> check_deadline(
        clock_type::time_point deadline) const;
    std::optional<api_error> check_vectors(const batch &b) const;
};

void server::impl::count(const char *endpoint, const char *method, int http,
                         clock_type::time_point start) {
    double seconds =
        std::chrono::duration<double>(clock_type::now() - start).count();
    requests
        .Add({{"endpoint", endpoint},
              {"method", method},
              {"code", std::to_string(http)}})
        .Increment();
    latency.Add({{"endpoint", endpoint}, {"method", method}}, kLatencyBuckets)
        .Observe(seconds);
}

std::optional<api_error> server::impl::authorize(const httplib::Request &req,
                                                 const route_def &r) const {
    if (!r.needs_key || keys.empty())
        return std::nullopt;

    std::string header = req.get_header_value("Authorization");
    if (!header.starts_with(kBearerPrefix)) {
        return api_error{kUnauthorized, "unauthenticated",
                         "missing \"Authorization: Bearer KEY\" header",
                         std::nullopt};
    }

    // Compare digests so the time taken depends on neither the key's
    // length nor where it differs; every key is checked.
    key_digest given =
        digest_of(std::string_view(header).substr(kBearerPrefix.size()));
    const stored_key *found = nullptr;
    for (const stored_key &k : keys) {
        bool same =
            CRYPTO_memcmp(k.digest.data(), given.data(), given.size()) == 0;
        if (same)
            found = &k;
    }
    if (found == nullptr) {
        return api_error{kUnauthorized, "unauthenticated",
                         "the API key is not valid", std::nullopt};
    }
    if (r.writes && found->read_only) {
        return api_error{kForbidden, "permission_denied",
                         "the API key is read-only; " + std::string(r.method) +
                             " " + r.path + " writes",
                         std::nullopt};
    }
    return std::nullopt;
}

void server::impl::install_route(const route_def &r) {
    auto handler = [this, &r](const httplib::Request &req,
                              httplib::Response &res) {
        clock_type::time_point start = clock_type::now();
        reply out;
        if (auto denied = authorize(req, r)) {
            out = error_reply(*denied);
            if (denied->http == kUnauthorized) {
                res.set_header("WWW-Authenticate", "Bearer");
            }
        } else {
            out = dispatch(r.id, req, deadline_from(start));
        }

        if (r.id == route_id::metrics && out.http == kOk) {
            res.set_content(out.body.get<std::string>(),
                            "text/plain; version=0.0.4");
        } else {
            res.set_content(dump_json(out.body), "application/json");
        }
        res.status = out.http;
        count(r.path, r.method, out.http, start);
    };

    std::string method = r.method;
    if (method == "GET") {
        http.Get(r.pattern, handler);
    } else if (method == "POST") {
        http.Post(r.pattern, handler);
    } else {
        FACEVEC_ASSERT(method == "DELETE", "unexpected method " + method);
        http.Delete(r.pattern, handler);
    }
}

reply server::impl::dispatch(route_id id, const httplib::Request &req,
                             clock_type::time_point deadline) {
    switch (id) {
        case route_id::healthz:
            return healthz();
        case route_id::metrics:
            return metrics();
        case route_id::enroll:
            return enroll(req, deadline);
        case route_id::query:
            return query(req, deadline);
        case route_id::list_persons:
            return list_persons(req);
        case route_id::remove_person:
            return remove_person(req);
        case route_id::remove_face:
            return remove_face(req);
        case route_id::stats:
            return stats();
    }
    FACEVEC_ASSERT(false, "unknown route");
}

void server::impl::install_routes() {
    for (const route_def &r : kRoutes)
        install_route(r);

    // Runs before any body is read. httplib holds a compressed or chunked
    // body to the size limit only as it arrives on the wire, not as it
    // unpacks: both are refused, so --max-body-bytes bounds the memory a
    // request can take.
    http.set_pre_routing_handler([this](const httplib::Request &req,
                                        httplib::Response &res) {
        std::optional<api_error> e;
        const std::string encoding = req.get_header_value("Content-Encoding");
        const std::string transfer = req.get_header_value("Transfer-Encoding");
        if (!encoding.empty() && encoding != "identity") {
            e = api_error{kUnsupportedMediaType,
                          error_code_name(error_code::unsupported),
                          "Content-Encoding " + encoding +
                              " is not accepted: send the body as it is",
                          std::nullopt};
        } else if (!transfer.empty() && transfer != "identity") {
            e = api_error{kLengthRequired,
                          error_code_name(error_code::invalid_argument),
                          "Transfer-Encoding " + transfer +
                              " is not accepted: send Content-Length",
                          std::nullopt};
        }
        if (!e)
            return httplib::Server::HandlerResponse::Unhandled;
        res.status = e->http;
        res.set_content(dump_json(error_reply(*e).body), "application/json");
        count(kNoRoute, "any", res.status, clock_type::now());
        return httplib::Server::HandlerResponse::Handled;
    });

    // Answers httplib produced itself (no route, body too large, bad
    // HTTP) get the JSON error shape too.
    http.set_error_handler([this](const httplib::Request &req,
                                  httplib::Response &res) {
        if (!res.body.empty())
            return;
        api_error e{res.status, error_code_name(error_code::invalid_argument),
                    "malformed request", std::nullopt};
        if (res.status == kNotFound) {
            e.code = error_code_name(error_code::not_found);
            e.message = "no route for " + req.method + " " + req.path;
        } else if (res.status == kPayloadTooLarge) {
            e.code = error_code_name(error_code::resource_exhausted);
            e.message = "body is larger than " +
                        std::to_string(options.limits.max_body_bytes) +
                        " bytes";
        }
        res.set_content(dump_json(error_reply(e).body), "application/json");
        count(kNoRoute, "any", res.status, clock_type::now());
    });
    http.set_exception_handler([](const httplib::Request &req,
                                  httplib::Response &res,
                                  std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception &e) {
            what = e.what();
        } catch (...) {
        }
        logger()->error("{} {}: {}", req.method, req.path, what);
        api_error e{kInternalError, error_code_name(error_code::internal), what,
                    std::nullopt};
        res.status = kInternalError;
        res.set_content(dump_json(error_reply(e).body), "application/json");
    });
}

// ---- handlers ----

reply server::impl::healthz() {
    return {kOk, {{"status", "ok"}}};
}

reply server::impl::metrics() {
    engine_stats s = db.stats();
    faces_stored.Set(static_cast<double>(s.faces));
    persons_stored.Set(static_cast<double>(s.persons));
    prometheus::TextSerializer text;
    return {kOk, json(text.Serialize(registry->Collect()))};
}

std::optional<api_error> server::impl::check_counts(const batch &b) const {
    const server_limits &l = options.limits;
    if (b.size() > l.max_items) {
        return too_large("request has " + std::to_string(b.size()) +
                             " items, the limit is " +
                             std::to_string(l.max_items),
                         l.max_items);
    }
    size_t images = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        if (b.is_image[i] && ++images > l.max_images) {
            return too_large("request has " + std::to_string(b.image_count()) +
                                 " images, the limit is " +
                                 std::to_string(l.max_images),
                             i);
        }
    }
    return std::nullopt;
}

clock_type::time_point server::impl::deadline_from(
    clock_type::time_point start) const {
    double seconds = options.limits.request_timeout_seconds;
    if (seconds <= 0)
        return clock_type::time_point::max();
    return start + std::chrono::duration_cast<clock_type::duration>(
                       std::chrono::duration<double>(seconds));
}

std::optional<api_error> server::impl::check_deadline(
    clock_type::time_point deadline) const {
    if (clock_type::now() <= deadline)
        return std::nullopt;
    std::ostringstream limit;
    limit << options.limits.request_timeout_seconds;
    return api_error{kUnavailable, "deadline_exceeded",
                     "the request ran over the server's time limit of " +
                         limit.str() + " s (--request-timeout); nothing " +
                         "was written",
                     std::nullopt};
}

namespace {

// An image's error as an answer: the client sent it, so decoding
// failures are 4xx too.
api_error image_error(const status &s, size_t item) {
    switch (s.code()) {
        case error_code::corruption:
        case error_code::not_found:
            return bad_request(s.message(), item);
        case error_code::unsupported:
            return {kUnsupportedMediaType, error_code_name(s.code()),
                    s.message(), item};
        default:
            return error_from(s, item);
    }
}

}  // namespace

std::optional<api_error> server::impl::embed_images(
    batch &b, image_purpose purpose, clock_type::time_point deadline) {
    std::vector<size_t> positions;
    std::vector<image_input> inputs;
    for (size_t i = 0; i < b.size(); ++i) {
        if (!b.is_image[i])
            continue;
        if (!options.embedder) {
            return api_error{kNotImplemented,
                             error_code_name(error_code::unsupported),
                             "item " + std::to_string(i) +
                                 ": this server has no image embedder; "
                                 "send vectors",
                             i};
        }
        const std::string &bytes = b.images[i];
        inputs.push_back(
            {{reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()},
             b.names[i]});
        positions.push_back(i);
    }
    if (inputs.empty())
        return std::nullopt;

    std::vector<result<embedded_image>> out = options.embedder->embed(
        inputs, purpose, {options.limits.max_image_pixels, deadline});
    FACEVEC_ASSERT(out.size() == inputs.size(),
                   "the embedder returned a wrong number of results");
    if (auto late = check_deadline(deadline))
        return late;
    b.embedded.resize(b.size());
    for (size_t j = 0; j < out.size(); ++j) {
        size_t item = positions[j];
        if (!out[j].is_ok())
            return image_error(out[j].error(), item);
        b.embedded[item] = std::move(out[j]).value();
        FACEVEC_ASSERT(!b.embedded[item].faces.empty(),
                       "the embedder returned an image without faces");
        b.vectors[item] = b.embedded[item].faces.front().embedding;
    }
    images_embedded.Increment(static_cast<double>(inputs.size()));
    return std::nullopt;
}

std::optional<api_error> server::impl::check_vectors(const batch &b) const {
    uint32_t dim = db.meta().dim;
    for (size_t i = 0; i < b.size(); ++i) {
        if (b.vectors[i].size() != dim) {
            return bad_request("item " + std::to_string(i) + ": vector has " +
                                   std::to_string(b.vectors[i].size()) +
                                   " values, the database's dim is " +
                                   std::to_string(dim),
                               i);
        }
    }
    return std::nullopt;
}

reply server::impl::enroll(const httplib::Request &req,
                           clock_type::time_point deadline) {
    if (auto e = check_content_type(req))
        return error_reply(*e);

    batch b;
    json body;
    std::optional<api_error> e;
    if (is_form(req)) {
        e = parse_enroll_form(req, b);
    } else if (!(e = parse_json_body(req.body, body))) {
        e = parse_enroll_json(body, b);
    }
    if (!e)
        e = check_counts(b);
    if (!e)
        e = embed_images(b, image_purpose::enroll, deadline);
    if (!e)
        e = check_deadline(deadline);
    if (e)
        return error_reply(*e);

    // An image carries its content hash: the same photo sent again for
    // the same person is skipped, as `facevec enroll` does.
    std::vector<enroll_item> items(b.size());
    for (size_t i = 0; i < b.size(); ++i) {
        std::string hash = b.is_image[i] ? b.embedded[i].content_hash : "";
        items[i] = {std::move(b.persons[i]), std::move(b.vectors[i]),
                    std::move(b.sources[i]), std::move(hash)};
        status valid = db.validate(items[i], i);
        if (!valid.is_ok())
            return error_reply(error_from(valid, i));
    }

    // The whole batch in one atomic write: strict refuses it all when any
    // item is bad.
    result<enroll_report> report = db.enroll(items, /*strict=*/true);
    if (!report.is_ok())
        return error_reply(error_from(report.error()));

    json faces = json::array();
    for (size_t j = 0; j < report->ids.size(); ++j) {
        faces.push_back(
            {{"item", report->enrolled[j]}, {"face", report->ids[j]}});
    }
    return {kOk, {{"faces", std::move(faces)}, {"skipped", report->skipped}}};
}

reply server::impl::query(const httplib::Request &req,
                          clock_type::time_point deadline) {
    if (auto e = check_content_type(req))
        return error_reply(*e);

    batch b;
    query_params p;
    json body;
    std::optional<api_error> e;
    int max_k = options.limits.max_k;
    if (is_form(req)) {
        e = parse_query_form(req, max_k, b, p);
    } else if (!(e = parse_json_body(req.body, body))) {
        e = parse_query_json(body, max_k, b, p);
    }
    if (!e)
        e = check_counts(b);
    if (!e)
        e = embed_images(b, image_purpose::query, deadline);
    if (!e)
        e = check_vectors(b);
    if (!e)
        e = check_deadline(deadline);
    if (e)
        return error_reply(*e);

    // One query per vector, or per face found in the images.
    std::vector<const std::vector<float> *> rows;
    std::vector<std::pair<size_t, size_t>> owners;  // (item, face)
    for (size_t i = 0; i < b.size(); ++i) {
        if (!b.is_image[i]) {
            rows.push_back(&b.vectors[i]);
            owners.emplace_back(i, 0);
            continue;
        }
        const std::vector<image_face> &faces = b.embedded[i].faces;
        for (size_t f = 0; f < faces.size(); ++f) {
            rows.push_back(&faces[f].embedding);
            owners.emplace_back(i, f);
        }
        // A crowd photo is one item but many queries: the item limit
        // bounds the queries too, and so the answer's size.
        if (rows.size() > options.limits.max_items) {
            return error_reply(too_large(
                "item " + std::to_string(i) + ": the request's images hold " +
                    "more than " + std::to_string(options.limits.max_items) +
                    " faces, the limit of queries per request",
                i));
        }
    }
    uint32_t dim = db.meta().dim;
    std::vector<float> flat(rows.size() * dim);
    for (size_t r = 0; r < rows.size(); ++r) {
        std::copy(rows[r]->begin(), rows[r]->end(),
                  flat.begin() + static_cast<ptrdiff_t>(r * dim));
    }

    clock_type::time_point start = clock_type::now();
    result<std::vector<query_answer>> answers =
        db.query(flat.data(), rows.size(), p.k, p.threshold);
    query_latency.Observe(
        std::chrono::duration<double>(clock_type::now() - start).count());
    if (!answers.is_ok())
        return error_reply(error_from(answers.error()));

    json results = json::array();
    for (size_t r = 0; r < answers->size(); ++r) {
        auto [item, face] = owners[r];
        if (!b.is_image[item]) {
            results.push_back(to_json((*answers)[r], r));
            continue;
        }
        results.push_back(face_result(
            b.names[item], b.embedded[item].faces[face], (*answers)[r], r));
    }
    return {kOk, {{"results", std::move(results)}}};
}

reply server::impl::list_persons(const httplib::Request &req) {
    size_t limit = kDefaultListLimit;
    if (req.has_param("limit")) {
        std::string text = req.get_param_value("limit");
        auto [end, ec] =
            std::from_chars(text.data(), text.data() + text.size(), limit);
        if (ec != std::errc() || end != text.data() + text.size() ||
            limit == 0 || limit > options.limits.max_list_limit) {
            return error_reply(
                bad_request("limit is \"" + text + "\", must be in 1.." +
                            std::to_string(options.limits.max_list_limit)));
        }
    }
    std::string after = req.get_param_value("after");

    std::vector<std::pair<std::string, uint64_t>> page =
        db.list_persons(after, limit);
    json persons = json::array();
    for (const auto &[name, faces] : page) {
        persons.push_back({{"person", name}, {"faces", faces}});
    }
    json next = page.size() == limit ? json(page.back().first) : json();
    return {kOk, {{"persons", std::move(persons)}, {"next", next}}};
}

reply server::impl::remove_person(const httplib::Request &req) {
    std::string person = req.matches[1];
    result<size_t> removed = db.remove_person(person);
    if (!removed.is_ok())
        return error_reply(error_from(removed.error()));
    return {kOk, {{"person", person}, {"removed", *removed}}};
}

reply server::impl::remove_face(const httplib::Request &req) {
    std::string text = req.matches[1];
    uint64_t id = 0;
    auto [end, ec] =
        std::from_chars(text.data(), text.data() + text.size(), id);
    if (ec != std::errc() || end != text.data() + text.size()) {
        return error_reply(
            bad_request("face id \"" + text + "\" is not an integer"));
    }
    status s = db.remove_face(id);
    if (!s.is_ok())
        return error_reply(error_from(s));
    return {kOk, {{"face", id}, {"removed", 1}}};
}

reply server::impl::stats() {
    engine_stats s = db.stats();
    return {kOk,
            {{"faces", s.faces},
             {"persons", s.persons},
             {"dim", s.dim},
             {"model_fingerprint", s.model_fingerprint},
             {"normalized", s.normalized},
             {"threshold", json_number(s.threshold)},
             {"disk_bytes", s.disk_bytes}}};
}

// ---- lifetime ----

server::server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
server::~server() {
    stop();
}

result<std::unique_ptr<server>> server::start(engine &db,
                                              server_options options) {
    if (options.keys.empty() && !is_loopback_host(options.host)) {
        return invalid_argument(
            "refusing to listen on " + options.host +
            " without API keys; give --keys FILE or a loopback address");
    }
    if (options.http_threads == 0) {
        return invalid_argument("the HTTP thread count must be >= 1");
    }
    double timeout = options.limits.request_timeout_seconds;
    if (!std::isfinite(timeout) || timeout < 0 ||
        timeout > kMaxRequestTimeoutSeconds) {
        return invalid_argument(
            "the request timeout must be 0 to " +
            std::to_string(static_cast<int>(kMaxRequestTimeoutSeconds)) +
            " seconds");
    }
    if (options.embedder && options.embedder->dim() != db.meta().dim) {
        return mismatch("the image embedder makes " +
                        std::to_string(options.embedder->dim()) +
                        "-float embeddings, the database holds " +
                        std::to_string(db.meta().dim));
    }
    if (options.embedder && !db.meta().model_fingerprint.empty() &&
        options.embedder->fingerprint() != db.meta().model_fingerprint) {
        return mismatch("the image embedder is " +
                        options.embedder->fingerprint() +
                        ", the database holds embeddings of " +
                        db.meta().model_fingerprint);
    }

    auto p = std::make_unique<impl>(db, std::move(options));
    for (const api_key &k : p->options.keys) {
        p->keys.push_back({digest_of(k.key), k.read_only});
    }

    const server_limits &l = p->options.limits;
    size_t threads = p->options.http_threads;
    p->http.new_task_queue = [threads] {
        return new httplib::ThreadPool(threads);
    };
    p->http.set_payload_max_length(l.max_body_bytes);
    p->http.set_read_timeout(l.read_timeout_seconds);
    p->http.set_write_timeout(l.write_timeout_seconds);
    p->http.set_keep_alive_timeout(l.keep_alive_seconds);
    // An answer is written as headers then body; with Nagle's algorithm
    // the body waits for the client's delayed ACK (about 40 ms).
    p->http.set_tcp_nodelay(true);
    p->install_routes();

    const std::string &host = p->options.host;
    if (p->options.port == 0) {
        p->port = p->http.bind_to_any_port(host);
    } else if (p->http.bind_to_port(host, p->options.port)) {
        p->port = p->options.port;
    } else {
        p->port = -1;
    }
    if (p->port < 0) {
        return io_error("cannot listen on " + host + ":" +
                        std::to_string(p->options.port));
    }
    return std::unique_ptr<server>(new server(std::move(p)));
}

int server::port() const {
    return impl_->port;
}

status server::run() {
    impl_->running = true;
    if (impl_->stop_requested) {
        impl_->running = false;
        return status::ok();
    }
    bool ok = impl_->http.listen_after_bind();
    impl_->running = false;
    if (!ok && !impl_->stop_requested) {
        return io_error("the HTTP listener failed on port " +
                        std::to_string(impl_->port));
    }
    return status::ok();
}

void server::stop() {
    impl_->stop_requested = true;
    // run() may be about to listen: wait until it does, so the stop is
    // not lost.
    while (impl_->running && !impl_->http.is_running()) {
        std::this_thread::sleep_for(kStopPollInterval);
    }
    impl_->http.stop();
}

std::vector<route_info> server::routes() {
    std::vector<route_info> out;
    for (const route_def &r : kRoutes) {
        out.push_back({r.method, r.path, r.writes});
    }
    return out;
}

}  // namespace facevec::api
