#include "common/threading.h"

#include <omp.h>
#include <sched.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <string>
#include <thread>

namespace facevec {
namespace {

int threads_from_environment() {
    const char *v = std::getenv(kThreadsEnv);
    if (v != nullptr && *v != '\0') {
        char *end = nullptr;
        long n = std::strtol(v, &end, /*base=*/10);
        if (end != v && *end == '\0' && n > 0) {
            return static_cast<int>(n);
        }
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? static_cast<int>(hw) : 1;
}

// The single thread that runs compute jobs, started on first use and
// joined at exit.
class compute_worker {
  public:
    compute_worker() : thread_([this] { loop(); }) {}

    ~compute_worker() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }

    void submit(std::packaged_task<void()> *job) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back(job);
        }
        wake_.notify_one();
    }

    std::thread::id id() const { return thread_.get_id(); }

  private:
    void loop() {
        omp_set_num_threads(compute_threads());
        omp_set_max_active_levels(1);
        for (;;) {
            std::packaged_task<void()> *job = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock,
                           [this] { return stopping_ || !queue_.empty(); });
                if (queue_.empty())
                    return;
                job = queue_.front();
                queue_.pop_front();
            }
            (*job)();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::packaged_task<void()> *> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

compute_worker &worker() {
    static compute_worker w;
    return w;
}

}  // namespace

int compute_threads() {
    static const int kThreads = threads_from_environment();
    return kThreads;
}

bool on_compute_thread() {
    return std::this_thread::get_id() == worker().id();
}

void run_compute(const std::function<void()> &job) {
    if (on_compute_thread()) {
        job();
        return;
    }
    std::packaged_task<void()> task(job);
    std::future<void> done = task.get_future();
    worker().submit(&task);
    done.get();
}

}  // namespace facevec
