// `facevec serve`: the HTTP API over one database until SIGTERM or SIGINT.
//
// Both signals are blocked in every thread before the database is opened;
// one thread waits for them and stops the server, which stops accepting,
// answers the requests in flight, and returns; the engine is then closed,
// so every acknowledged write is in the store.
//
// Images: a database made by the photo pipeline (its fingerprint names
// the model) or --model loads the face pipeline (api/faces.h) once;
// decoding and alignment run on one pool of --image-threads workers
// shared by every request, the network on the process's compute thread
// (common/threading.h), so many connections never oversubscribe the
// cores.
#include <pthread.h>
#include <signal.h>

#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "api/engine.h"
#include "api/faces.h"
#include "api/server.h"
#include "common/log.h"
#include "common/threading.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace facevec::cli {
namespace {

constexpr int kMaxPort = 65535;

struct serve_options {
    std::string db;
    std::string listen = "127.0.0.1:8080";
    std::string keys;
    bool create = false;
    uint32_t dim = 0;
    api::server_limits limits;
    size_t http_threads = api::server_options().http_threads;
    std::string model;  // empty: the database's, if it has one
    std::string faces = "one";
    bool no_images = false;
    int image_threads = 0;  // 0: compute_threads()
};

// A fixed set of worker threads running queued jobs in arrival order;
// run() is called from many request threads at once.
class work_pool {
  public:
    explicit work_pool(int threads) {
        for (int t = 0; t < threads; ++t)
            workers_.emplace_back([this] { loop(); });
    }
    ~work_pool() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (std::thread &t : workers_)
            t.join();
    }
    work_pool(const work_pool &) = delete;
    work_pool &operator=(const work_pool &) = delete;

    // Runs fn(0) .. fn(n - 1) on the workers and returns when all have
    // returned; the first exception thrown is rethrown here.
    void run(size_t n, const std::function<void(size_t)> &fn) {
        std::latch done(static_cast<std::ptrdiff_t>(n));
        std::mutex failure_mu;
        std::exception_ptr failure;
        {
            std::lock_guard lock(mu_);
            for (size_t i = 0; i < n; ++i) {
                jobs_.emplace_back([&, i] {
                    try {
                        fn(i);
                    } catch (...) {
                        std::lock_guard l(failure_mu);
                        if (!failure)
                            failure = std::current_exception();
                    }
                    done.count_down();
                });
            }
        }
        wake_.notify_all();
        done.wait();
        if (failure)
            std::rethrow_exception(failure);
    }

  private:
    void loop() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mu_);
                wake_.wait(lock,
                           [this] { return stopping_ || !jobs_.empty(); });
                if (jobs_.empty())
                    return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }

    std::mutex mu_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> workers_;
};

// The server's image embedder: the photo pipeline over request bytes.
class pipeline_embedder final : public api::image_embedder {
  public:
    pipeline_embedder(std::unique_ptr<face_pipeline> pipeline,
                      face_policy enroll_policy, int threads)
        : pipeline_(std::move(pipeline)),
          enroll_policy_(enroll_policy),
          pool_(threads) {}

    uint32_t dim() const override {
        return static_cast<uint32_t>(pipeline_->dim());
    }
    std::string fingerprint() const override {
        return pipeline_->fingerprint();
    }

    std::vector<result<api::embedded_image>> embed(
        std::span<const api::image_input> images, api::image_purpose purpose,
        const api::embed_limits &limits) override {
        std::vector<photo_bytes> photos;
        for (const api::image_input &in : images)
            photos.push_back({in.name, in.bytes});
        bytes_options bo;
        bo.max_pixels = limits.max_pixels;
        bo.runner = [this](size_t n, const std::function<void(size_t)> &fn) {
            pool_.run(n, fn);
        };
        bo.cancelled = [deadline = limits.deadline] {
            return std::chrono::steady_clock::now() > deadline;
        };
        face_policy policy = purpose == api::image_purpose::enroll
                                 ? enroll_policy_
                                 : face_policy::all;

        std::vector<result<api::embedded_image>> out;
        for (photo_faces &p : pipeline_->process_bytes(photos, policy, bo)) {
            if (!p.error.is_ok()) {
                out.emplace_back(p.error);
                continue;
            }
            api::embedded_image img;
            img.content_hash = std::move(p.content_hash);
            for (face_found &f : p.faces) {
                api::image_face face;
                face.box = {static_cast<float>(f.box.left),
                            static_cast<float>(f.box.top),
                            static_cast<float>(f.box.right),
                            static_cast<float>(f.box.bottom)};
                face.fallback = p.fallback;
                face.embedding = std::move(f.embedding);
                img.faces.push_back(std::move(face));
            }
            out.emplace_back(std::move(img));
        }
        return out;
    }

  private:
    std::unique_ptr<face_pipeline> pipeline_;
    face_policy enroll_policy_;
    work_pool pool_;
};

// The pipeline for --model, or for the database's own model; null when
// the server serves vectors only.
result<std::unique_ptr<face_pipeline>> load_pipeline(
    const serve_options &o, const std::string &db_fingerprint) {
    if (o.no_images || (o.model.empty() && db_fingerprint.empty()))
        return std::unique_ptr<face_pipeline>();
    face_pipeline_options po;
    if (o.model.empty()) {
        auto from_db = options_for_fingerprint(db_fingerprint);
        if (!from_db)
            return from_db.error();
        po = *from_db;
    } else {
        po.model = o.model;
    }
    auto pipeline = face_pipeline::create(po);
    if (!pipeline) {
        return pipeline.error().with_context(
            "loading the model for image requests (--no-images serves "
            "vectors only)");
    }
    return std::move(*pipeline);
}

// "HOST:PORT" or "[V6HOST]:PORT"; port 0 picks a free one.
status parse_listen(const std::string &text, std::string &host, int &port) {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        return invalid_argument("--listen " + text + ": expected HOST:PORT");
    }
    host = text.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    std::string digits = text.substr(colon + 1);
    auto [end, ec] =
        std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || end != digits.data() + digits.size() || port < 0 ||
        port > kMaxPort) {
        return invalid_argument("--listen " + text + ": bad port \"" + digits +
                                "\"");
    }
    return status::ok();
}

// Waits for SIGTERM or SIGINT (blocked in every thread) and stops `srv`.
// A signal sent by finish() ends the wait when the server stopped alone.
class signal_waiter {
  public:
    explicit signal_waiter(api::server &srv) {
        thread_ = std::thread([this, &srv] {
            int sig = 0;
            sigwait(&signals(), &sig);
            if (!finishing_) {
                logger()->info("signal {}: draining requests", sig);
                srv.stop();
            }
        });
    }
    ~signal_waiter() { finish(); }

    void finish() {
        if (!thread_.joinable())
            return;
        finishing_ = true;
        pthread_kill(thread_.native_handle(), SIGTERM);
        thread_.join();
    }

    // The signals that stop the server.
    static sigset_t &signals() {
        static sigset_t set = [] {
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGTERM);
            sigaddset(&s, SIGINT);
            return s;
        }();
        return set;
    }

  private:
    std::thread thread_;
    std::atomic<bool> finishing_{false};
};

void install_logger() {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto l = std::make_shared<spdlog::logger>("facevec", sink);
    l->set_pattern("facevec: %v");
    l->set_level(spdlog::level::info);
    set_logger(l);
}

void run_serve(const serve_options &o) {
    api::server_options so;
    so.limits = o.limits;
    so.http_threads = o.http_threads;
    if (status s = parse_listen(o.listen, so.host, so.port); !s) {
        return fail(s);
    }
    if (!o.keys.empty()) {
        auto keys = api::read_keys_file(o.keys);
        if (!keys)
            return fail(keys.error());
        so.keys = std::move(keys).value();
    }
    if (so.keys.empty() && !api::is_loopback_host(so.host)) {
        return fail("refusing to listen on " + so.host +
                    " without API keys: give --keys FILE");
    }

    // Before any thread exists, so that every thread inherits the mask.
    pthread_sigmask(SIG_BLOCK, &signal_waiter::signals(), nullptr);
    install_logger();

    auto policy = parse_face_policy(o.faces);
    if (!policy)
        return fail(policy.error());

    // --model fixes the database's model; without it an existing
    // database's own model is loaded after opening it.
    std::unique_ptr<face_pipeline> pipeline;
    if (!o.model.empty() && !o.no_images) {
        auto p = load_pipeline(o, "");
        if (!p)
            return fail(p.error());
        pipeline = std::move(*p);
    }
    engine_options eo;
    eo.create_if_missing = o.create;
    eo.meta.dim = o.dim;
    if (pipeline) {
        // Checked before anything is created: a database of another dim
        // could never take the model's embeddings.
        if (o.dim != 0 && o.dim != static_cast<uint32_t>(pipeline->dim())) {
            return fail(mismatch("--dim " + std::to_string(o.dim) + ": " +
                                 pipeline->fingerprint() + " makes " +
                                 std::to_string(pipeline->dim()) +
                                 "-float embeddings"));
        }
        eo.meta.model_fingerprint = pipeline->fingerprint();
        eo.meta.normalized = pipeline->normalized();
        eo.meta.threshold = pipeline->default_threshold();
        eo.meta.dim = static_cast<uint32_t>(pipeline->dim());
    }
    auto db = engine::open(o.db, eo);
    if (!db)
        return fail(db.error());
    if (!pipeline) {
        auto p = load_pipeline(o, (*db)->meta().model_fingerprint);
        if (!p)
            return fail(p.error());
        pipeline = std::move(*p);
    }
    if (pipeline) {
        int threads = o.image_threads > 0 ? o.image_threads : compute_threads();
        so.embedder = std::make_shared<pipeline_embedder>(std::move(pipeline),
                                                          *policy, threads);
    }

    auto srv = api::server::start(**db, so);
    if (!srv)
        return fail(srv.error());
    std::printf("listening on http://%s:%d\n", so.host.c_str(), (*srv)->port());
    std::fflush(stdout);

    signal_waiter waiter(**srv);
    status ran = (*srv)->run();
    waiter.finish();
    srv->reset();
    db->reset();
    if (!ran)
        return fail(ran);
    logger()->info("stopped; database closed");
}

}  // namespace

void register_serve_commands(CLI::App &app) {
    auto o = std::make_shared<serve_options>();
    CLI::App *c = app.add_subcommand(
        "serve", "Serve the HTTP JSON API (see README, HTTP API)");
    c->add_option("--db", o->db, "Database directory")->required();
    c->add_option("--listen", o->listen, "HOST:PORT (port 0: any free)")
        ->capture_default_str();
    c->add_option("--keys", o->keys,
                  "API keys file: one key per line, \"KEY read-only\" for "
                  "a read-only key; required off loopback");
    c->add_flag("--create", o->create, "Create the database when missing");
    c->add_option("--dim", o->dim, "Embedding dimension (with --create)");
    c->add_option("--threads", o->http_threads,
                  "HTTP worker threads = connections served at once")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    api::server_limits &l = o->limits;
    c->add_option("--max-body-bytes", l.max_body_bytes,
                  "Largest request body (413 above)")
        ->capture_default_str();
    c->add_option("--max-items", l.max_items,
                  "Most vectors or items per request (413 above)")
        ->capture_default_str();
    c->add_option("--max-images", l.max_images,
                  "Most images per request (413 above)")
        ->capture_default_str();
    c->add_option("--max-image-pixels", l.max_image_pixels,
                  "Most pixels per image (413 above)")
        ->capture_default_str();
    c->add_option("--read-timeout", l.read_timeout_seconds,
                  "Seconds to receive a request")
        ->capture_default_str();
    c->add_option("--write-timeout", l.write_timeout_seconds,
                  "Seconds to send an answer")
        ->capture_default_str();
    c->add_option("--request-timeout", l.request_timeout_seconds,
                  "Seconds to handle a request, decimals allowed (503 "
                  "deadline_exceeded above; 0: no limit)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    c->add_option("--model", o->model,
                  "Model for image requests: face-resnet, vgg16 or a weights "
                  "file (default: the database's; with --create, a new "
                  "database is made for it)");
    c->add_option("--faces", o->faces,
                  "The face an enrolled image gives: one (else an error), "
                  "largest or central")
        ->capture_default_str()
        ->check(CLI::IsMember({"one", "largest", "central"}));
    c->add_flag("--no-images", o->no_images,
                "Load no model: image requests answer 501");
    c->add_option("--image-threads", o->image_threads,
                  "Threads decoding and aligning images, shared by all "
                  "requests (default: FACEVEC_THREADS or the CPU count)")
        ->check(CLI::PositiveNumber);
    c->callback([o] {
        if (o->create && o->dim == 0 && (o->model.empty() || o->no_images)) {
            return fail("--create needs --dim or --model");
        }
        run_serve(*o);
    });
}

}  // namespace facevec::cli
