// `facevec serve`: the HTTP API over one database until SIGTERM or SIGINT.
//
// Both signals are blocked in every thread before the database is opened;
// one thread waits for them and stops the server, which stops accepting,
// answers the requests in flight, and returns; the engine is then closed,
// so every acknowledged write is in the store.
#include <pthread.h>
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "api/engine.h"
#include "api/server.h"
#include "common/log.h"
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
};

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

    engine_options eo;
    eo.create_if_missing = o.create;
    eo.meta.dim = o.dim;
    auto db = engine::open(o.db, eo);
    if (!db)
        return fail(db.error());

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
    c->callback([o] {
        if (o->create && o->dim == 0) {
            return fail("--create needs --dim");
        }
        run_serve(*o);
    });
}

}  // namespace facevec::cli
