// The process's compute thread policy.
//
// facevec's heavy numeric work (oneDNN convolutions, FAISS searches,
// OpenBLAS products) is parallelised with OpenMP. With GNU OpenMP every
// thread that opens a parallel region gets its own team of worker
// threads, so a server whose N request threads each ran a network would
// hold N teams of T threads on T cores and thrash. The policy:
//
//   - One compute thread per process runs every parallel region, one at a
//     time. run_compute() hands it a job and blocks the caller until the
//     job is done; callers from many threads queue in arrival order.
//   - That thread's OpenMP team has compute_threads() threads:
//     FACEVEC_THREADS when set to a positive integer, else the number of
//     CPUs the process may run on.
//
// So the process holds at most compute_threads() compute threads however
// many callers there are, and a single job uses every core. Code that
// calls oneDNN, FAISS or BLAS on behalf of a request wraps the call in
// run_compute(). Work that is not parallel (decoding, preprocessing, I/O)
// stays on the caller's thread and runs concurrently.
//
// On a machine shared with other busy processes, set FACEVEC_THREADS=1:
// an OpenMP team whose threads are descheduled waits at every barrier
// (measured here under load: face ResNet 25 ms per image with 1 thread,
// 0.5-1.2 s with 2).
#pragma once

#include <functional>

namespace facevec {

// Environment variable that caps the compute threads.
inline constexpr const char *kThreadsEnv = "FACEVEC_THREADS";

// Threads one compute job uses: FACEVEC_THREADS when it is a positive
// integer, else the CPUs in this process's affinity mask (at least 1).
// Read once, on first use.
int compute_threads();

// Runs `job` on the process's compute thread and returns when it has
// finished. An exception thrown by `job` is rethrown here. Called from
// the compute thread itself (a job that runs another), `job` runs inline.
// Thread-safe; jobs run one at a time in the order they were submitted.
void run_compute(const std::function<void()> &job);

// True on the compute thread.
bool on_compute_thread();

}  // namespace facevec
