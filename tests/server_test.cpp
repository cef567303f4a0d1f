// The HTTP API end to end: the real `facevec serve` program on a free
// loopback port, driven by httplib::Client.
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "api/server.h"
#include "embed/embedder.h"
#include "embed/image.h"
#include "embed/import_faceapi.h"
#include "tests/test_util.h"

namespace facevec {
namespace {

using json = nlohmann::json;
using facevec::testing::temp_dir;

constexpr uint32_t kDim = 8;
constexpr auto kStartTimeout = std::chrono::seconds(30);
constexpr auto kExitTimeout = std::chrono::seconds(30);
constexpr int kClientTimeoutSeconds = 30;
constexpr unsigned kSeed = 1234;

constexpr const char *kWriteKey = "write-key-0123456789abcdef";
constexpr const char *kReadKey = "read-only-key-0123456789abcdef";

// ---- paths ----

std::string facevec_bin() {
    return facevec::testing::facevec_bin();
}

std::string source_dir() {
    return facevec::testing::source_dir();
}

// ---- processes ----

// Runs `facevec serve ...` with stdout on a pipe and stderr in a file;
// waits for its "listening on http://HOST:PORT" line.
class server_process {
  public:
    server_process(const std::vector<std::string> &args,
                   const std::string &stderr_path) {
        int out[2];
        EXPECT_EQ(pipe(out), 0);
        pid_ = fork();
        if (pid_ == 0) {
            dup2(out[1], STDOUT_FILENO);
            int err =
                open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(err, STDERR_FILENO);
            close(out[0]);
            std::vector<char *> argv;
            std::string bin = facevec_bin();
            argv.push_back(bin.data());
            std::vector<std::string> copy = args;
            for (std::string &a : copy)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(bin.c_str(), argv.data());
            _exit(127);
        }
        close(out[1]);
        out_ = out[0];
        port_ = read_port();
    }

    ~server_process() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (out_ >= 0)
            close(out_);
    }

    int port() const { return port_; }
    pid_t pid() const { return pid_; }

    // Sends `sig` and returns the exit status, or -1 on timeout.
    int stop(int sig = SIGTERM) {
        kill(pid_, sig);
        return wait_exit();
    }

    int wait_exit() {
        auto deadline = std::chrono::steady_clock::now() + kExitTimeout;
        while (std::chrono::steady_clock::now() < deadline) {
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return -1;
    }

  private:
    int read_port() {
        std::string line;
        auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{out_, POLLIN, 0};
            if (poll(&p, 1, 100) <= 0)
                continue;
            char c;
            if (read(out_, &c, 1) != 1)
                return -1;
            if (c == '\n')
                break;
            line += c;
        }
        size_t colon = line.rfind(':');
        if (!line.starts_with("listening on ") || colon == std::string::npos) {
            return -1;
        }
        return std::stoi(line.substr(colon + 1));
    }

    pid_t pid_ = -1;
    int out_ = -1;
    int port_ = -1;
};

// Runs facevec with `args` to completion; returns the exit status and
// the stderr text.
std::pair<int, std::string> run_facevec(const std::vector<std::string> &args,
                                        const std::string &stderr_path) {
    std::string cmd = facevec_bin();
    for (const std::string &a : args)
        cmd += " '" + a + "'";
    cmd += " >/dev/null 2>'" + stderr_path + "'";
    int st = std::system(cmd.c_str());
    std::ifstream in(stderr_path);
    std::stringstream text;
    text << in.rdbuf();
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, text.str()};
}

// ---- data ----

std::vector<float> random_vector(std::mt19937 &rng) {
    std::normal_distribution<float> d;
    std::vector<float> v(kDim);
    for (float &x : v)
        x = d(rng);
    return v;
}

json enroll_body(
    const std::vector<std::pair<std::string, std::vector<float>>> &items) {
    json list = json::array();
    for (const auto &[person, v] : items) {
        list.push_back({{"person", person}, {"vector", v}, {"source", "t"}});
    }
    return {{"items", list}};
}

// ---- fixture ----

// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class ServerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::ofstream keys(dir_.str("keys.txt"));
        keys << "# test keys\n\n"
             << kWriteKey << "\n"
             << kReadKey << " read-only\n";
    }

    std::string db() const { return dir_.str("db"); }

    // Starts the server with keys on a vector database of kDim; extra
    // options are appended.
    void start(std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {"--create", "--dim",
                                         std::to_string(kDim)};
        args.insert(args.end(), extra.begin(), extra.end());
        start_with(args);
    }

    // Starts the server with keys and `extra` options.
    void start_with(const std::vector<std::string> &extra) {
        std::vector<std::string> args = {"serve",
                                         "--db",
                                         db(),
                                         "--listen",
                                         "127.0.0.1:0",
                                         "--keys",
                                         dir_.str("keys.txt"),
                                         "--threads",
                                         "16"};
        args.insert(args.end(), extra.begin(), extra.end());
        server_ =
            std::make_unique<server_process>(args, dir_.str("stderr.txt"));
        ASSERT_GT(server_->port(), 0) << stderr_text();
    }

    std::string stderr_text() const {
        std::ifstream in(dir_.str("stderr.txt"));
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }

    std::unique_ptr<httplib::Client> client(const char *key = kWriteKey) {
        auto c =
            std::make_unique<httplib::Client>("127.0.0.1", server_->port());
        c->set_read_timeout(kClientTimeoutSeconds);
        c->set_write_timeout(kClientTimeoutSeconds);
        if (key != nullptr)
            c->set_bearer_token_auth(key);
        return c;
    }

    // POSTs a JSON body and expects `status`; returns the parsed answer.
    json post(const std::string &path, const std::string &body, int expected,
              const char *key = kWriteKey) {
        auto res = client(key)->Post(path, body, "application/json");
        EXPECT_TRUE(res) << "no answer from " << path;
        if (!res)
            return json();
        EXPECT_EQ(res->status, expected) << res->body;
        return json::parse(res->body, nullptr, false);
    }

    json get(const std::string &path, int expected,
             const char *key = kWriteKey) {
        auto res = client(key)->Get(path.c_str());
        EXPECT_TRUE(res) << "no answer from " << path;
        if (!res)
            return json();
        EXPECT_EQ(res->status, expected) << res->body;
        return json::parse(res->body, nullptr, false);
    }

    json del(const std::string &path, int expected,
             const char *key = kWriteKey) {
        auto res = client(key)->Delete(path.c_str());
        EXPECT_TRUE(res) << "no answer from " << path;
        if (!res)
            return json();
        EXPECT_EQ(res->status, expected) << res->body;
        return json::parse(res->body, nullptr, false);
    }

    // Expects the JSON error shape with `code`, a message containing
    // `text`, and `item`.
    static void expect_error(const json &j, const std::string &code,
                             const std::string &text,
                             std::optional<size_t> item = std::nullopt) {
        ASSERT_TRUE(j.is_object()) << j;
        EXPECT_EQ(j.value("code", ""), code) << j;
        EXPECT_NE(j.value("message", "").find(text), std::string::npos) << j;
        ASSERT_TRUE(j.contains("item")) << j;
        if (item) {
            EXPECT_EQ(j["item"], *item) << j;
        } else {
            EXPECT_TRUE(j["item"].is_null()) << j;
        }
    }

    // Enrolls `n` random faces for `person`; returns their vectors.
    std::vector<std::vector<float>> enroll(const std::string &person, int n,
                                           std::mt19937 &rng) {
        std::vector<std::pair<std::string, std::vector<float>>> items;
        std::vector<std::vector<float>> vectors;
        for (int i = 0; i < n; ++i) {
            vectors.push_back(random_vector(rng));
            items.push_back({person, vectors.back()});
        }
        post("/v1/enroll", enroll_body(items).dump(), 200);
        return vectors;
    }

    temp_dir dir_;
    std::unique_ptr<server_process> server_;
};

// ---- endpoints ----

TEST_F(ServerTest, HealthzAnswersWithoutKey) {
    start();
    json j = get("/healthz", 200, nullptr);
    EXPECT_EQ(j["status"], "ok");
}

TEST_F(ServerTest, EnrolledVectorsAreFoundByQuery) {
    start();
    std::mt19937 rng(kSeed);
    std::vector<float> alice = random_vector(rng);
    std::vector<float> bob = random_vector(rng);
    json enrolled =
        post("/v1/enroll", enroll_body({{"alice", alice}, {"bob", bob}}).dump(),
             200);
    ASSERT_EQ(enrolled["faces"].size(), 2u) << enrolled;
    EXPECT_EQ(enrolled["faces"][0]["item"], 0);
    EXPECT_EQ(enrolled["faces"][1]["item"], 1);
    uint64_t alice_face = enrolled["faces"][0]["face"];

    json q = {{"vectors", {alice, bob}}, {"k", 2}};
    json answer = post("/v1/query", q.dump(), 200);
    ASSERT_EQ(answer["results"].size(), 2u) << answer;

    const json &first = answer["results"][0];
    std::set<std::string> keys;
    for (const auto &[k, v] : first.items())
        keys.insert(k);
    EXPECT_EQ(keys,
              (std::set<std::string>{"query", "person", "distance", "top"}));
    EXPECT_EQ(first["query"], 0);
    EXPECT_EQ(first["person"], "alice");
    EXPECT_EQ(first["distance"], 0.0);
    ASSERT_EQ(first["top"].size(), 2u);
    EXPECT_EQ(first["top"][0]["person"], "alice");
    EXPECT_EQ(first["top"][0]["face"], alice_face);
    EXPECT_EQ(first["top"][1]["person"], "bob");
    EXPECT_GT(first["top"][1]["distance"].get<double>(), 0.0);
    EXPECT_EQ(answer["results"][1]["query"], 1);
    EXPECT_EQ(answer["results"][1]["person"], "bob");
}

TEST_F(ServerTest, QueryAboveThresholdIsUnknown) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 1, rng);
    std::vector<float> far(kDim, 100.0f);
    json q = {{"vectors", {far}}, {"k", 1}, {"threshold", 0.5}};
    json answer = post("/v1/query", q.dump(), 200);
    EXPECT_TRUE(answer["results"][0]["person"].is_null()) << answer;
    EXPECT_EQ(answer["results"][0]["top"][0]["person"], "alice");
}

TEST_F(ServerTest, PersonsArePagedInLabelOrder) {
    start();
    std::mt19937 rng(kSeed);
    for (const char *p : {"carol", "alice", "dave", "bob", "erin"}) {
        enroll(p, p[0] == 'b' ? 2 : 1, rng);
    }
    json page = get("/v1/persons?limit=2", 200);
    ASSERT_EQ(page["persons"].size(), 2u) << page;
    EXPECT_EQ(page["persons"][0]["person"], "alice");
    EXPECT_EQ(page["persons"][1]["person"], "bob");
    EXPECT_EQ(page["persons"][1]["faces"], 2);
    EXPECT_EQ(page["next"], "bob");

    std::vector<std::string> all;
    std::string after;
    for (int pages = 0; pages < 10; ++pages) {
        json p = get("/v1/persons?limit=2&after=" + after, 200);
        for (const json &x : p["persons"])
            all.push_back(x["person"]);
        if (p["next"].is_null())
            break;
        after = p["next"];
    }
    EXPECT_EQ(all, (std::vector<std::string>{"alice", "bob", "carol", "dave",
                                             "erin"}));
}

TEST_F(ServerTest, DeletePersonAndFaceRemoveThem) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 2, rng);
    json bob = post(
        "/v1/enroll",
        enroll_body({{"bob", random_vector(rng)}, {"bob", random_vector(rng)}})
            .dump(),
        200);
    uint64_t bob_face = bob["faces"][0]["face"];

    json removed = del("/v1/persons/alice", 200);
    EXPECT_EQ(removed["person"], "alice");
    EXPECT_EQ(removed["removed"], 2);
    json face = del("/v1/faces/" + std::to_string(bob_face), 200);
    EXPECT_EQ(face["face"], bob_face);

    json stats = get("/v1/stats", 200);
    EXPECT_EQ(stats["faces"], 1);
    EXPECT_EQ(stats["persons"], 1);
}

TEST_F(ServerTest, PersonNamesArePercentDecodedInPaths) {
    start();
    std::mt19937 rng(kSeed);
    enroll("jean/luc picard", 1, rng);
    json removed = del("/v1/persons/jean%2Fluc%20picard", 200);
    EXPECT_EQ(removed["person"], "jean/luc picard");
}

TEST_F(ServerTest, StatsReportDatabase) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 3, rng);
    json s = get("/v1/stats", 200);
    EXPECT_EQ(s["faces"], 3);
    EXPECT_EQ(s["persons"], 1);
    EXPECT_EQ(s["dim"], kDim);
    EXPECT_TRUE(s.contains("disk_bytes"));
    EXPECT_TRUE(s.contains("threshold"));
}

TEST_F(ServerTest, MetricsAreInPrometheusTextFormat) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 2, rng);
    json q = {{"vectors", {random_vector(rng)}}};
    post("/v1/query", q.dump(), 200);
    post("/v1/query", "{", 400);

    auto res = client(nullptr)->Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_NE(res->get_header_value("Content-Type").find("text/plain"),
              std::string::npos);
    const std::string &m = res->body;
    EXPECT_NE(m.find("# TYPE facevec_http_requests_total counter"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("facevec_http_requests_total{code=\"200\",endpoint=\"/"
                     "v1/query\",method=\"POST\"} 1"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("facevec_http_requests_total{code=\"400\",endpoint=\"/"
                     "v1/query\",method=\"POST\"} 1"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("facevec_http_request_duration_seconds_bucket{endpoint="
                     "\"/v1/query\",method=\"POST\",le=\"+Inf\"} 2"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("facevec_query_duration_seconds_count 1"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("facevec_faces_stored 2"), std::string::npos) << m;
    EXPECT_NE(m.find("facevec_images_embedded_total 0"), std::string::npos)
        << m;
}

// ---- errors ----

TEST_F(ServerTest, BadJsonIsInvalidArgument) {
    start();
    json e = post("/v1/enroll", "{\"items\": [", 400);
    expect_error(e, "invalid_argument", "body is not valid JSON");
    e = post("/v1/query", "[1, 2]", 400);
    expect_error(e, "invalid_argument", "not a JSON object");
    e = post("/v1/enroll", "{\"items\": [{\"vector\": [1]}]}", 400);
    expect_error(e, "invalid_argument", "item 0: person is missing", 0);
    e = post("/v1/enroll",
             "{\"items\": [{\"person\": \"a\", \"vector\": [1, \"x\"]}]}", 400);
    expect_error(e, "invalid_argument", "item 0: vector[1] is not a number", 0);
    e = post("/v1/query", "{\"vectors\": [[1e300, 0, 0, 0, 0, 0, 0, 0]]}", 400);
    expect_error(e, "invalid_argument", "vector[0] is not a finite float", 0);
}

TEST_F(ServerTest, WrongDimNamesTheItem) {
    start();
    std::mt19937 rng(kSeed);
    std::vector<float> short_vector(kDim - 1, 0.5f);
    json body = enroll_body({{"a", random_vector(rng)}, {"b", short_vector}});
    json e = post("/v1/enroll", body.dump(), 400);
    expect_error(e, "invalid_argument", "item 1", 1);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], 0) << "a batch is atomic";

    json q = {{"vectors", {random_vector(rng), short_vector}}};
    e = post("/v1/query", q.dump(), 400);
    expect_error(e, "invalid_argument",
                 "item 1: vector has 7 values, the database's dim is 8", 1);
}

TEST_F(ServerTest, BadBase64ImageNamesTheItem) {
    start();
    json body = {{"items",
                  {{{"person", "a"}, {"image", "aGVsbG8="}},
                   {{"person", "b"}, {"image", "not base64!"}}}}};
    json e = post("/v1/enroll", body.dump(), 400);
    expect_error(e, "invalid_argument", "item 1: image is not valid base64", 1);
    json q = {{"images", {"@@@@"}}};
    e = post("/v1/query", q.dump(), 400);
    expect_error(e, "invalid_argument", "item 0: image is not valid base64", 0);
}

TEST_F(ServerTest, ImagesWithoutEmbedderAreUnsupported) {
    start();
    json q = {{"images", {"aGVsbG8="}}};
    json e = post("/v1/query", q.dump(), 501);
    expect_error(e, "unsupported", "no image embedder", 0);

    httplib::MultipartFormDataItems form = {
        {"person", "alice", "", ""},
        {"images", "not really a jpeg", "a.jpg", "image/jpeg"}};
    auto res = client()->Post("/v1/enroll", form);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 501) << res->body;
    expect_error(json::parse(res->body), "unsupported", "no image embedder", 0);
}

TEST_F(ServerTest, MultipartWithoutPersonIsInvalid) {
    start();
    httplib::MultipartFormDataItems form = {
        {"images", "bytes", "a.jpg", "image/jpeg"}};
    auto res = client()->Post("/v1/enroll", form);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    expect_error(json::parse(res->body), "invalid_argument",
                 "form has no \"person\" field");

    form = {{"person", "a", "", ""},
            {"person", "b", "", ""},
            {"images", "bytes", "a.jpg", "image/jpeg"}};
    res = client()->Post("/v1/enroll", form);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    expect_error(json::parse(res->body), "invalid_argument",
                 "more than one \"person\" field");
}

TEST_F(ServerTest, UnknownPersonAndFaceAreNotFound) {
    start();
    json e = del("/v1/persons/nobody", 404);
    expect_error(e, "not_found", "nobody");
    e = del("/v1/faces/999", 404);
    expect_error(e, "not_found", "999");
    e = del("/v1/faces/abc", 400);
    expect_error(e, "invalid_argument", "face id \"abc\" is not an integer");
    e = get("/v1/nothing", 404);
    expect_error(e, "not_found", "no route for GET /v1/nothing");
}

TEST_F(ServerTest, MissingOrWrongKeyIsUnauthenticated) {
    start();
    json e = get("/v1/stats", 401, nullptr);
    expect_error(e, "unauthenticated", "Authorization: Bearer");
    e = get("/v1/stats", 401, "wrong-key-0123456789abcdef");
    expect_error(e, "unauthenticated", "not valid");
    e = post("/v1/query", "{}", 401, "");
    expect_error(e, "unauthenticated", "");
}

TEST_F(ServerTest, ReadOnlyKeyCannotWrite) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 1, rng);
    json body = enroll_body({{"bob", random_vector(rng)}});
    json e = post("/v1/enroll", body.dump(), 403, kReadKey);
    expect_error(e, "permission_denied", "read-only");
    e = del("/v1/persons/alice", 403, kReadKey);
    expect_error(e, "permission_denied", "DELETE /v1/persons/{person}");

    json q = {{"vectors", {random_vector(rng)}}};
    post("/v1/query", q.dump(), 200, kReadKey);
    get("/v1/persons", 200, kReadKey);
}

TEST_F(ServerTest, OversizeBodyIsRefusedAndServerStaysUp) {
    start({"--max-body-bytes", "1000"});
    std::string big = "{\"vectors\": [[" + std::string(5000, ' ') + "1]]}";
    json e = post("/v1/query", big, 413);
    expect_error(e, "resource_exhausted", "larger than 1000 bytes");
    get("/healthz", 200, nullptr);
}

// Sends `head` (a request's line and headers, no body) on a fresh loopback
// connection and returns what the server answers before it closes.
std::string raw_exchange(int port, const std::string &head) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string answer;
    if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
        send(fd, head.data(), head.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(head.size())) {
        constexpr int kWaitMs = 5000;
        pollfd p{fd, POLLIN, 0};
        char buf[4096];
        while (poll(&p, 1, kWaitMs) > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            answer.append(buf, static_cast<size_t>(n));
            if (answer.find("\r\n\r\n") != std::string::npos &&
                answer.back() == '}')
                break;
        }
    }
    close(fd);
    return answer;
}

// Compressed and chunked bodies could outgrow --max-body-bytes as they
// unpack or arrive: refused from the headers, before any body is read.
TEST_F(ServerTest, CompressedOrChunkedBodiesAreRefused) {
    start({"--max-body-bytes", "1000"});
    const std::string head = std::string("POST /v1/query HTTP/1.1\r\n") +
                             "Host: 127.0.0.1\r\n"
                             "Authorization: Bearer " +
                             kWriteKey +
                             "\r\n"
                             "Content-Type: application/json\r\n";
    std::string answer = raw_exchange(
        server_->port(),
        head + "Content-Encoding: gzip\r\nContent-Length: 100\r\n\r\n");
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 415")) << answer;
    EXPECT_NE(answer.find("Content-Encoding gzip is not accepted"),
              std::string::npos)
        << answer;

    answer = raw_exchange(server_->port(),
                          head + "Transfer-Encoding: chunked\r\n\r\n");
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 411")) << answer;
    EXPECT_NE(answer.find("Transfer-Encoding chunked is not accepted"),
              std::string::npos)
        << answer;
    get("/healthz", 200, nullptr);
}

TEST_F(ServerTest, NumberBeyondDoubleIsInvalidJson) {
    start();
    json e = post("/v1/query", R"({"vectors": [[1]], "k": 1e999})", 400);
    expect_error(e, "invalid_argument", "number overflow");
}

TEST_F(ServerTest, TooManyImagesOrItemsAreRefused) {
    start({"--max-images", "2", "--max-items", "3"});
    json q = {{"images", {"aGVsbG8=", "aGVsbG8=", "aGVsbG8="}}};
    json e = post("/v1/query", q.dump(), 413);
    expect_error(e, "resource_exhausted",
                 "request has 3 images, the limit is 2", 2);

    std::vector<float> v(kDim, 0.0f);
    json many = {{"vectors", {v, v, v, v}}};
    e = post("/v1/query", many.dump(), 413);
    expect_error(e, "resource_exhausted", "request has 4 items, the limit is 3",
                 3);
    get("/healthz", 200, nullptr);
}

TEST_F(ServerTest, BadQueryParametersAreInvalid) {
    start();
    std::vector<float> v(kDim, 0.0f);
    json q = {{"vectors", {v}}, {"k", 0}};
    expect_error(post("/v1/query", q.dump(), 400), "invalid_argument",
                 "k is 0, must be in 1..1000");
    q = {{"vectors", {v}}, {"threshold", -1}};
    expect_error(post("/v1/query", q.dump(), 400), "invalid_argument",
                 "threshold is not a finite number > 0");
    q = {{"vectors", {v}}, {"images", {"aGVsbG8="}}};
    expect_error(post("/v1/query", q.dump(), 400), "invalid_argument",
                 "exactly one of");
    expect_error(get("/v1/persons?limit=0", 400), "invalid_argument",
                 "limit is \"0\"");

    auto res = client()->Post("/v1/query", "k=1", "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 415);
    expect_error(json::parse(res->body), "unsupported", "text/plain");
}

TEST_F(ServerTest, BadLabelNamesTheItem) {
    start();
    std::mt19937 rng(kSeed);
    json body = enroll_body({{"ok", random_vector(rng)},
                             {std::string(300, 'x'), random_vector(rng)}});
    json e = post("/v1/enroll", body.dump(), 400);
    expect_error(e, "invalid_argument", "1", 1);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], 0);
}

// ---- start-up ----

TEST_F(ServerTest, NonLoopbackWithoutKeysIsRefused) {
    auto [code, err] = run_facevec({"serve", "--db", db(), "--listen",
                                    "0.0.0.0:0", "--create", "--dim", "8"},
                                   dir_.str("refused.txt"));
    EXPECT_NE(code, 0);
    EXPECT_NE(err.find("refusing to listen on 0.0.0.0 without API keys"),
              std::string::npos)
        << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_FALSE(std::filesystem::exists(db())) << "refused before opening";
}

TEST_F(ServerTest, MalformedKeysFileIsRefused) {
    std::ofstream(dir_.str("bad_keys.txt")) << "short\n";
    auto [code, err] =
        run_facevec({"serve", "--db", db(), "--listen", "127.0.0.1:0", "--keys",
                     dir_.str("bad_keys.txt"), "--create", "--dim", "8"},
                    dir_.str("refused.txt"));
    EXPECT_NE(code, 0);
    EXPECT_NE(err.find("bad_keys.txt line 1: key is shorter than 16"),
              std::string::npos)
        << err;
}

TEST(KeysFileTest, ReadsKeysFlagsAndSkipsComments) {
    temp_dir dir;
    std::ofstream(dir.str("k")) << "# c\n\n  aaaaaaaaaaaaaaaa  \n"
                                   "bbbbbbbbbbbbbbbb read-only\n";
    auto keys = api::read_keys_file(dir.str("k"));
    ASSERT_TRUE(keys.is_ok()) << keys.error().to_string();
    ASSERT_EQ(keys->size(), 2u);
    EXPECT_EQ((*keys)[0].key, "aaaaaaaaaaaaaaaa");
    EXPECT_FALSE((*keys)[0].read_only);
    EXPECT_TRUE((*keys)[1].read_only);

    std::ofstream(dir.str("bad")) << "cccccccccccccccc admin\n";
    auto bad = api::read_keys_file(dir.str("bad"));
    ASSERT_FALSE(bad.is_ok());
    EXPECT_NE(bad.error().message().find("line 1: expected"),
              std::string::npos);
    EXPECT_EQ(api::read_keys_file(dir.str("missing")).error().code(),
              error_code::io_error);

    std::ofstream(dir.str("twice")) << "dddddddddddddddd\n"
                                       "dddddddddddddddd read-only\n";
    auto twice = api::read_keys_file(dir.str("twice"));
    ASSERT_FALSE(twice.is_ok());
    EXPECT_NE(twice.error().message().find("twice line 2: key listed twice"),
              std::string::npos)
        << twice.error().message();
}

TEST(LoopbackTest, RecognisesLoopbackHosts) {
    EXPECT_TRUE(api::is_loopback_host("127.0.0.1"));
    EXPECT_TRUE(api::is_loopback_host("127.3.2.1"));
    EXPECT_TRUE(api::is_loopback_host("localhost"));
    EXPECT_TRUE(api::is_loopback_host("::1"));
    EXPECT_FALSE(api::is_loopback_host("0.0.0.0"));
    EXPECT_FALSE(api::is_loopback_host("10.0.0.1"));
    EXPECT_FALSE(api::is_loopback_host("::"));
}

// ---- OpenAPI ----

json load_openapi() {
    std::ifstream in(source_dir() + "/api/openapi.json");
    EXPECT_TRUE(in) << "api/openapi.json not found";
    return json::parse(in, nullptr, false);
}

TEST(OpenApiTest, DocumentListsExactlyTheServedRoutes) {
    json doc = load_openapi();
    ASSERT_FALSE(doc.is_discarded()) << "api/openapi.json is not JSON";
    std::set<std::pair<std::string, std::string>> documented;
    for (const auto &[path, ops] : doc["paths"].items()) {
        for (const auto &[method, op] : ops.items()) {
            std::string upper = method;
            for (char &c : upper)
                c = static_cast<char>(std::toupper(c));
            documented.insert({upper, path});
        }
    }
    std::set<std::pair<std::string, std::string>> served;
    for (const api::route_info &r : api::server::routes()) {
        served.insert({r.method, r.path});
    }
    EXPECT_EQ(documented, served);
}

TEST_F(ServerTest, EveryDocumentedOperationAnswers) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 1, rng);
    json bob = post("/v1/enroll",
                    enroll_body({{"bob", random_vector(rng)}}).dump(), 200);
    std::map<std::string, std::string> params = {
        {"{person}", "alice"},
        {"{face}", std::to_string(bob["faces"][0]["face"].get<uint64_t>())}};
    json body = {
        {"vectors", {random_vector(rng)}},
        {"items", {{{"person", "carol"}, {"vector", random_vector(rng)}}}}};

    json doc = load_openapi();
    for (const auto &[path, ops] : doc["paths"].items()) {
        std::string url = path;
        for (const auto &[name, value] : params) {
            if (size_t at = url.find(name); at != std::string::npos) {
                url.replace(at, name.size(), value);
            }
        }
        for (const auto &[method, op] : ops.items()) {
            auto c = client();
            httplib::Result res =
                method == "get"      ? c->Get(url.c_str())
                : method == "delete" ? c->Delete(url.c_str())
                : url == "/v1/query"
                    ? c->Post(url, json{{"vectors", body["vectors"]}}.dump(),
                              "application/json")
                    : c->Post(url, json{{"items", body["items"]}}.dump(),
                              "application/json");
            ASSERT_TRUE(res) << method << " " << url;
            EXPECT_EQ(res->status, 200)
                << method << " " << url << " " << res->body;
            EXPECT_TRUE(op["responses"].contains("200"));
        }
    }
}

TEST_F(ServerTest, QueryAnswerHasTheSchemaFields) {
    start();
    std::mt19937 rng(kSeed);
    enroll("alice", 1, rng);
    json q = {{"vectors", {random_vector(rng)}}};
    json answer = post("/v1/query", q.dump(), 200);

    json schemas = load_openapi()["components"]["schemas"];
    auto keys_of = [](const json &obj) {
        std::set<std::string> s;
        for (const auto &[k, v] : obj.items())
            s.insert(k);
        return s;
    };
    auto required = [&](const char *name) {
        std::set<std::string> s;
        for (const json &k : schemas[name]["required"])
            s.insert(k);
        return s;
    };
    EXPECT_EQ(keys_of(answer), required("QueryResponse"));
    EXPECT_EQ(keys_of(answer["results"][0]), required("QueryResult"));
    EXPECT_EQ(keys_of(answer["results"][0]["top"][0]), required("Match"));
    EXPECT_EQ(keys_of(get("/v1/stats", 200)), required("Stats"));
    EXPECT_EQ(keys_of(get("/v1/persons", 200)), required("PersonsPage"));
    json e = post("/v1/query", "{", 400);
    EXPECT_EQ(keys_of(e), required("Error"));
}

// ---- images ----

namespace fs = std::filesystem;

std::string read_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string base64(const std::string &bytes) {
    constexpr size_t kQuantumBytes = 3;
    constexpr size_t kQuantumChars = 4;
    std::string out(
        (bytes.size() + kQuantumBytes - 1) / kQuantumBytes * kQuantumChars + 1,
        '\0');
    int n =
        EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                        reinterpret_cast<const unsigned char *>(bytes.data()),
                        static_cast<int>(bytes.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

bool face_resnet_cached() {
    return fs::exists(fs::path(embed::model_cache_dir()) /
                      (std::string("face-api-") + embed::kFaceApiVersion) /
                      embed::kFaceApiModel);
}

// Two LFW persons whose first three photos each hold a face the detector
// finds, with those photos; empty when the folder lacks them.
std::vector<std::pair<std::string, std::vector<std::string>>> lfw_persons(
    const std::string &faces) {
    constexpr int kPhotos = 3;
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const char *person : {"Aaron_Peirsol", "Abdullah_Gul"}) {
        std::vector<std::string> files;
        for (int i = 1; i <= kPhotos; ++i) {
            fs::path f =
                fs::path(faces) / "lfw" / person /
                (std::string(person) + "_000" + std::to_string(i) + ".jpg");
            if (!fs::exists(f))
                return {};
            files.push_back(f.string());
        }
        out.push_back({person, files});
    }
    return out;
}

// A database made for face-resnet by the server itself; skips without
// LFW or the model's weights.
// NOLINTNEXTLINE(readability-identifier-naming): gtest fixture style.
class PhotoServerTest : public ServerTest {
  protected:
    void SetUp() override {
        ServerTest::SetUp();
        faces_ = facevec::testing::faces_dir();
        if (faces_.empty()) {
            GTEST_SKIP() << "LFW not found (set FACEVEC_FACES or put it at "
                            "../shared/faces): skipping the image API tests";
        }
        if (!face_resnet_cached()) {
            GTEST_SKIP() << "face-resnet weights not in "
                         << embed::model_cache_dir()
                         << " (run tools/fetch_models.sh): skipping the "
                            "image API tests";
        }
        persons_ = lfw_persons(faces_);
        ASSERT_EQ(persons_.size(), 2u)
            << faces_ << "/lfw lacks Aaron_Peirsol or Abdullah_Gul";
    }

    void start_photos(std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {"--create", "--model", "face-resnet",
                                         "--faces", "central"};
        args.insert(args.end(), extra.begin(), extra.end());
        start_with(args);
    }

    // Photo `i` of person `p`, base64.
    std::string photo64(size_t p, size_t i) const {
        return base64(read_bytes(persons_[p].second[i]));
    }

    httplib::Result post_form(const std::string &path,
                              const httplib::MultipartFormDataItems &form) {
        return client()->Post(path, form);
    }

    std::string faces_;
    std::vector<std::pair<std::string, std::vector<std::string>>> persons_;
};

TEST_F(PhotoServerTest, ImagesEnrolledByBase64AndMultipartAreFoundByQuery) {
    start_photos();
    const std::string &alice = persons_[0].first;
    const std::string &bob = persons_[1].first;

    json body = {{"items",
                  {{{"person", alice}, {"image", photo64(0, 0)}},
                   {{"person", bob}, {"image", photo64(1, 0)}}}}};
    json enrolled = post("/v1/enroll", body.dump(), 200);
    ASSERT_EQ(enrolled["faces"].size(), 2u) << enrolled;
    EXPECT_EQ(enrolled["faces"][1]["item"], 1);
    EXPECT_TRUE(enrolled["skipped"].empty()) << enrolled;

    httplib::MultipartFormDataItems form = {
        {"person", alice, "", ""},
        {"images", read_bytes(persons_[0].second[1]), "second.jpg",
         "image/jpeg"}};
    auto res = post_form("/v1/enroll", form);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(json::parse(res->body)["faces"].size(), 1u) << res->body;

    // The same photo again for the same person is skipped.
    json again = post(
        "/v1/enroll",
        json{{"items", {{{"person", alice}, {"image", photo64(0, 0)}}}}}.dump(),
        200);
    EXPECT_TRUE(again["faces"].empty()) << again;
    EXPECT_EQ(again["skipped"], json::array({0})) << again;

    json stats = get("/v1/stats", 200);
    EXPECT_EQ(stats["faces"], 3);
    EXPECT_EQ(stats["persons"], 2);
    EXPECT_NE(stats["model_fingerprint"].get<std::string>().find("face-resnet"),
              std::string::npos);

    // An unseen photo of each person: its largest face (first) is found.
    // Parsed keeping the key order.
    json q = {{"images", {photo64(0, 2), photo64(1, 2)}}, {"k", 2}};
    auto raw = client()->Post("/v1/query", q.dump(), "application/json");
    ASSERT_TRUE(raw);
    ASSERT_EQ(raw->status, 200) << raw->body;
    auto answer = nlohmann::ordered_json::parse(raw->body);
    ASSERT_GE(answer["results"].size(), 2u) << answer;
    std::map<std::string, nlohmann::ordered_json> first;
    for (const auto &r : answer["results"]) {
        first.emplace(r["input"].get<std::string>(), r);
    }
    ASSERT_TRUE(first.count("item 0") && first.count("item 1")) << answer;
    EXPECT_EQ(first["item 0"]["person"], alice) << answer;
    EXPECT_EQ(first["item 1"]["person"], bob) << answer;

    // The keys `facevec query IMAGE` prints, in its order.
    std::vector<std::string> keys;
    for (const auto &[k, v] : first["item 0"].items())
        keys.push_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"input", "box", "query", "person",
                                              "distance", "top"}));
    EXPECT_EQ(first["item 0"]["query"], 0);
    EXPECT_EQ(first["item 0"]["box"].size(), 4u);

    // A multipart query names the face by the file name.
    httplib::MultipartFormDataItems qform = {
        {"images", read_bytes(persons_[1].second[2]), "probe.jpg",
         "image/jpeg"},
        {"k", "1", "", ""}};
    res = post_form("/v1/query", qform);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json fa = json::parse(res->body);
    EXPECT_EQ(fa["results"][0]["input"], "probe.jpg") << fa;
    EXPECT_EQ(fa["results"][0]["person"], bob) << fa;

    auto metrics = client(nullptr)->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("facevec_images_embedded_total 7"),
              std::string::npos)
        << metrics->body;
}

TEST_F(PhotoServerTest, BadImagesNameTheItemAndWriteNothing) {
    start_photos({"--max-images", "2"});
    const std::string &alice = persons_[0].first;
    std::string jpeg = read_bytes(persons_[0].second[0]);

    json body = {{"items",
                  {{{"person", alice}, {"image", base64(jpeg)}},
                   {{"person", alice}, {"image", "not base64!"}}}}};
    expect_error(post("/v1/enroll", body.dump(), 400), "invalid_argument",
                 "item 1: image is not valid base64", 1);

    // A JPEG cut short: a good photo before it is not written either.
    body = {{"items",
             {{{"person", alice}, {"image", base64(jpeg)}},
              {{"person", alice},
               {"image", base64(jpeg.substr(0, jpeg.size() / 2))}}}}};
    expect_error(post("/v1/enroll", body.dump(), 400), "invalid_argument",
                 "item 1", 1);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], 0) << "a batch is atomic";

    httplib::MultipartFormDataItems form = {
        {"person", alice, "", ""},
        {"images", jpeg, "good.jpg", "image/jpeg"},
        {"images", "GIF89a not really", "anim.gif", "image/gif"}};
    auto res = post_form("/v1/enroll", form);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 415) << res->body;
    expect_error(json::parse(res->body), "unsupported", "anim.gif", 1);

    // A flat grey picture holds no face.
    constexpr int kSide = 64;
    constexpr char kGrey = 100;
    std::string pgm = "P5\n64 64\n255\n" + std::string(kSide * kSide, kGrey);
    json q = {{"images", {base64(jpeg), base64(pgm)}}};
    expect_error(post("/v1/query", q.dump(), 400), "invalid_argument",
                 "item 1: no face found", 1);

    q = {{"images", {base64(jpeg), base64(jpeg), base64(jpeg)}}};
    expect_error(post("/v1/query", q.dump(), 413), "resource_exhausted",
                 "request has 3 images, the limit is 2", 2);
    get("/healthz", 200, nullptr);
}

// --dim that the model cannot fill is refused before a database exists.
TEST_F(PhotoServerTest, CreateWithAnotherDimThanTheModelsIsRefused) {
    const std::string fresh = dir_.str("fresh.db");
    auto [code, err] =
        run_facevec({"serve", "--db", fresh, "--listen", "127.0.0.1:0",
                     "--create", "--model", "face-resnet", "--dim", "64"},
                    dir_.str("refused.txt"));
    EXPECT_NE(code, 0);
    EXPECT_NE(err.find("--dim 64: face-resnet"), std::string::npos) << err;
    EXPECT_NE(err.find("makes 128-float embeddings"), std::string::npos) << err;
    EXPECT_FALSE(std::filesystem::exists(fresh)) << "refused before creating";
}

// One photo of two people is one item but two queries: over --max-items
// 1 it is refused, naming the item.
TEST_F(PhotoServerTest, FacesOverTheQueryLimitAreRefused) {
    start_photos({"--max-items", "1"});
    auto a = embed::decode_file(persons_[0].second[0]);
    auto b = embed::decode_file(persons_[1].second[0]);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    ASSERT_EQ(a->height, b->height);
    embed::image pair;
    pair.width = a->width + b->width;
    pair.height = a->height;
    pair.rgb.resize(static_cast<size_t>(pair.width) * pair.height * 3);
    for (int y = 0; y < pair.height; ++y) {
        auto row = pair.rgb.begin() + ptrdiff_t{y} * pair.width * 3;
        std::copy_n(a->rgb.begin() + ptrdiff_t{y} * a->width * 3, a->width * 3,
                    row);
        std::copy_n(b->rgb.begin() + ptrdiff_t{y} * b->width * 3, b->width * 3,
                    row + ptrdiff_t{a->width} * 3);
    }
    const std::string png = dir_.str("pair.png");
    ASSERT_TRUE(embed::write_png(pair, png).is_ok());

    json e = post("/v1/query",
                  json{{"images", {base64(read_bytes(png))}}}.dump(), 413);
    expect_error(e, "resource_exhausted",
                 "item 0: the request's images hold more than 1 faces", 0);
}

// A multipart file name is echoed in the answer: invalid UTF-8 in it is
// replaced, not a server error.
TEST_F(PhotoServerTest, FileNameThatIsNotUtf8IsAnsweredNormally) {
    start_photos();
    httplib::MultipartFormDataItems form = {{"images",
                                             read_bytes(persons_[0].second[0]),
                                             "\xff.jpg", "image/jpeg"}};
    auto res = post_form("/v1/query", form);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json answer = json::parse(res->body);
    ASSERT_EQ(answer["results"].size(), 1u) << answer;
    EXPECT_EQ(answer["results"][0]["input"], "\xef\xbf\xbd.jpg") << answer;
}

TEST_F(PhotoServerTest, ImageOverPixelCapIsRefused) {
    // LFW photos are 250 x 250.
    start_photos({"--max-image-pixels", "10000"});
    json body = {
        {"items", {{{"person", persons_[0].first}, {"image", photo64(0, 0)}}}}};
    expect_error(post("/v1/enroll", body.dump(), 413), "resource_exhausted",
                 "item 0: 250 x 250 = 62500 pixels, the limit is 10000", 0);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], 0);
}

TEST_F(PhotoServerTest, RequestOverTimeLimitIsUnavailableAndServerStaysUp) {
    start_photos({"--request-timeout", "0.001"});
    json items = json::array();
    for (size_t p = 0; p < persons_.size(); ++p) {
        for (size_t i = 0; i < persons_[p].second.size(); ++i) {
            items.push_back(
                {{"person", persons_[p].first}, {"image", photo64(p, i)}});
        }
    }
    json e = post("/v1/enroll", json{{"items", items}}.dump(), 503);
    expect_error(e, "deadline_exceeded", "time limit of 0.001 s");
    get("/healthz", 200, nullptr);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], 0) << "nothing was written";
}

// ---- concurrency and shutdown ----

// Writers enroll one-face batches (person "w<thread>-<n>") until told to
// stop; every acknowledged person is recorded.
struct writer_pool {
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::pair<std::string, std::vector<float>>> acknowledged;
    std::atomic<int> errors{0};
    std::vector<std::thread> threads;

    void start(int n, int port, bool tolerate_refusal) {
        for (int t = 0; t < n; ++t) {
            threads.emplace_back([this, t, port, tolerate_refusal] {
                std::mt19937 rng(kSeed + t);
                httplib::Client c("127.0.0.1", port);
                c.set_bearer_token_auth(kWriteKey);
                c.set_read_timeout(kClientTimeoutSeconds);
                for (int i = 0; !stop; ++i) {
                    std::string person =
                        "w" + std::to_string(t) + "-" + std::to_string(i);
                    std::vector<float> v = random_vector(rng);
                    auto res =
                        c.Post("/v1/enroll", enroll_body({{person, v}}).dump(),
                               "application/json");
                    if (res && res->status == 200) {
                        std::lock_guard lock(mu);
                        acknowledged.push_back({person, v});
                    } else if (!tolerate_refusal) {
                        ++errors;
                    } else {
                        std::this_thread::sleep_for(
                            std::chrono::milliseconds(5));
                    }
                }
            });
        }
    }
    void join() {
        stop = true;
        for (std::thread &t : threads)
            t.join();
    }
};

// Every acknowledged face is the nearest face to its own vector.
void expect_all_found(
    httplib::Client &c,
    const std::vector<std::pair<std::string, std::vector<float>>> &acked) {
    constexpr size_t kChunk = 200;
    for (size_t begin = 0; begin < acked.size(); begin += kChunk) {
        json vectors = json::array();
        size_t end = std::min(acked.size(), begin + kChunk);
        for (size_t i = begin; i < end; ++i)
            vectors.push_back(acked[i].second);
        json q = {{"vectors", vectors}, {"k", 1}};
        auto res = c.Post("/v1/query", q.dump(), "application/json");
        ASSERT_TRUE(res);
        ASSERT_EQ(res->status, 200) << res->body;
        json answer = json::parse(res->body);
        for (size_t i = begin; i < end; ++i) {
            EXPECT_EQ(answer["results"][i - begin]["top"][0]["person"],
                      acked[i].first);
        }
    }
}

TEST_F(ServerTest, QueriesWhileEnrollingSeeEveryAcknowledgedFace) {
    start();
    constexpr int kWriters = 2;
    constexpr int kReaders = 4;
    constexpr auto kDuration = std::chrono::seconds(3);

    writer_pool writers;
    writers.start(kWriters, server_->port(), /*tolerate_refusal=*/false);
    std::atomic<bool> stop{false};
    std::atomic<int> query_errors{0};
    std::atomic<int> queries{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < kReaders; ++r) {
        readers.emplace_back([&, r] {
            std::mt19937 rng(kSeed + 100 + r);
            auto c = client(kReadKey);
            while (!stop) {
                json q = {{"vectors", {random_vector(rng)}}, {"k", 3}};
                auto res = c->Post("/v1/query", q.dump(), "application/json");
                if (!res || res->status != 200) {
                    ++query_errors;
                } else {
                    ++queries;
                }
            }
        });
    }
    std::this_thread::sleep_for(kDuration);
    stop = true;
    for (std::thread &t : readers)
        t.join();
    writers.join();

    EXPECT_EQ(query_errors, 0);
    EXPECT_EQ(writers.errors, 0);
    EXPECT_GT(queries, 0);
    ASSERT_GT(writers.acknowledged.size(), 0u);
    EXPECT_EQ(get("/v1/stats", 200)["faces"], writers.acknowledged.size());
    expect_all_found(*client(), writers.acknowledged);
}

TEST_F(ServerTest, SigtermUnderLoadKeepsAcknowledgedWrites) {
    start();
    constexpr int kWriters = 3;
    constexpr auto kLoad = std::chrono::milliseconds(1500);

    writer_pool writers;
    writers.start(kWriters, server_->port(), /*tolerate_refusal=*/true);
    std::this_thread::sleep_for(kLoad);
    int code = server_->stop(SIGTERM);
    writers.join();
    EXPECT_EQ(code, 0) << stderr_text();
    EXPECT_NE(stderr_text().find("stopped; database closed"), std::string::npos)
        << stderr_text();
    ASSERT_GT(writers.acknowledged.size(), 0u);

    // A write the server finished while its client gave up is stored but
    // not acknowledged, hence >=.
    start();
    EXPECT_GE(get("/v1/stats", 200)["faces"].get<size_t>(),
              writers.acknowledged.size());
    expect_all_found(*client(), writers.acknowledged);
}

}  // namespace
}  // namespace facevec
