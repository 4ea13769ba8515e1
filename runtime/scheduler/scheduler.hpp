// The scheduler core: a pool of workers fed by one FIFO queue. No Python here.
//
// Who runs a worker, and what "attached" means while it runs a task, is the embedder's business
// (runtime/python): the pool asks a Spawner for a new worker thread when work waits and no
// worker is idle, and that thread calls Pool::work() with hooks that detach from and re-attach
// to whatever the thread must not hold while it sleeps (for CPython: its thread state).
//
// A worker that finds the queue empty first spins briefly, detached, before it parks: a burst of
// small tasks then costs no futex wake-up per task (measured: wake-ups were most of the cost
// of a no-op task on an interpreter worker).
//
// Why one locked queue rather than work stealing: tasks are Python calls of a microsecond or
// more, and every worker takes from the same queue with one lock hand-off; measured on 2 cores
// (bench/, tests/cpp) the queue's push+pop is well under 1% of a no-op task's cost, while
// stealing would add a per-worker deque and a second lock on the idle path.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "metrics.hpp"

namespace unirun::scheduler {

// One unit of work. Its state is shared with whoever waits for it (a future), so cancelling
// the future and starting the task race on one atomic, and exactly one of them wins.
class Task {
   public:
    // The states the pool relies on. A task that ran ends Finished; a cancelled one stays
    // Cancelled for the pool. Values from FirstOwnState on are the embedder's (the Python layer
    // tells "cancelled and its waiters notified" apart, a concurrent.futures notion).
    enum State : int { Pending = 0, Running = 1, Cancelled = 2, Finished = 3, FirstOwnState = 16 };

    virtual ~Task() = default;

    // Called on a worker, attached, after try_start() won. Returns false if the task failed
    // (raised); either way the task has recorded its outcome.
    virtual bool run() = 0;
    // Called, attached, for a task that was cancelled before it could start.
    virtual void skip() = 0;

    // Called by the worker that took the task: true if it may run now. The default is the
    // one atomic start; an embedder may tie more to it (start another task with it).
    virtual bool start() { return try_start(); }

    bool try_start() { return transition(Pending, Running); }
    bool try_cancel() { return transition(Pending, Cancelled); }
    bool transition(State from, State to) {
        int expected = from;
        return state_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
    }
    State state() const { return static_cast<State>(state_.load(std::memory_order_acquire)); }
    void set_state(State state) { state_.store(state, std::memory_order_release); }

    uint64_t enqueued_ticks = 0;  // set by Pool::submit when the pool times its tasks
    std::string label;         // the span's name on the timeline (set by the embedder when on)

   private:
    std::atomic<int> state_{Pending};
};

using TaskPtr = std::shared_ptr<Task>;

// Called by a task when it has delivered its outcome, before it wakes whoever waits for it: the
// worker running it will take new work at once, so a submit that the outcome provokes reuses
// that worker instead of starting another (ThreadPoolExecutor reuses idle threads the same way).
// A no-op unless `task` is the one the calling worker thread is running.
void note_task_finishing(const Task *task);

struct Counters {
    uint64_t submitted = 0;
    uint64_t started = 0;
    uint64_t completed = 0;  // ran and returned
    uint64_t failed = 0;     // ran and raised
    uint64_t cancelled = 0;  // never ran
    uint64_t queue_depth = 0;
    uint64_t workers_alive = 0;
    uint64_t workers_busy = 0;
    uint64_t workers_started = 0;
};

// What a worker thread does around sleeping: detach before, re-attach after.
struct ParkHooks {
    std::function<void()> detach;
    std::function<void()> attach;
};

class Pool : public std::enable_shared_from_this<Pool> {
   public:
    // Asked, with no lock held, to start one worker thread that will call work().
    // Returns false if it could not (the pool then retries on the next submit).
    using Spawner = std::function<bool(const std::shared_ptr<Pool> &)>;

    Pool(size_t max_workers, Spawner spawner);
    ~Pool();

    size_t max_workers() const { return max_workers_; }
    uint64_t id() const { return id_; }

    // The labels of this pool's metrics: executor (its name prefix; a trailing "-N" counter is
    // dropped, so every default-named ThreadPoolExecutor is one series) and flavor. Set once,
    // before the first submit.
    void set_labels(std::string executor, std::string flavor);
    std::string executor_label() const {
        std::lock_guard lock(mutex_);
        return executor_label_;
    }

    // Events only the embedder sees: a submit refused after shutdown, a worker that broke
    // (its process died, its interpreter could not start), calls failed by a broken pool.
    void note_rejected() { rejected_.fetch_add(1, std::memory_order_relaxed); }
    void note_worker_broken() { workers_broken_.fetch_add(1, std::memory_order_relaxed); }
    void note_failed(uint64_t n) { failed_.fetch_add(n, std::memory_order_relaxed); }
    void note_cancelled(uint64_t n) { cancelled_.fetch_add(n, std::memory_order_relaxed); }

    PoolSnapshot snapshot() const;

    enum class Submit { Queued, ShutDown };
    Submit submit(TaskPtr task);

    // Stop taking work. With cancel_pending, queued tasks are cancelled and returned so the
    // caller can notify their waiters (attached, in the caller's context). Workers finish what
    // is queued, then leave. Waiting for them is the embedder's (it owns the threads).
    std::vector<TaskPtr> shutdown(bool cancel_pending);
    bool is_shut_down() const;

    // The worker loop. Returns when the pool is shut down and its queue is empty.
    void work(const ParkHooks &hooks);

    // A spawned worker that will not call work() (its initializer failed, say).
    void worker_start_failed();

    // Shut down and hand back the queued tasks that have not started, for the caller to end
    // (with an error: the pool is broken). Tasks cancelled meanwhile are handed back too.
    std::vector<TaskPtr> drain();

    // Wake idle workers so they notice shutdown (also done by shutdown()).
    void wake_all();

    Counters counters() const;

   private:
    TaskPtr take(const ParkHooks &hooks, bool &waited);
    bool spin_for_work() const;

    // fork(): only the forking thread survives in the child, so every pool there starts over
    // with no workers and fresh locks (its queue is kept; new submits start new workers).
    friend struct ForkGuard;
    void reset_after_fork_in_child();

    const size_t max_workers_;
    Spawner spawner_;
    const uint64_t id_;
    const bool timed_;  // metrics_enabled() when made: time every task
    std::string executor_label_, flavor_label_;

    mutable std::mutex mutex_;
    std::condition_variable wakeup_;
    std::deque<TaskPtr> queue_;
    std::atomic<size_t> queued_{0};  // queue_.size(), readable without the lock (spinning)
    bool shut_down_ = false;
    size_t idle_ = 0;      // workers parked in take()
    size_t finishing_ = 0;  // workers whose task has delivered its outcome (note_task_finishing)
    size_t spawning_ = 0;  // asked for, not yet in work()
    size_t alive_ = 0;

    friend void note_task_finishing(const Task *task);

    std::atomic<uint64_t> submitted_{0}, started_{0}, completed_{0}, failed_{0}, cancelled_{0},
        busy_{0}, workers_started_{0}, rejected_{0}, workers_stopped_{0}, workers_broken_{0};
    // Task timings are kept per worker (each shard has one writer: no shared cache line, no
    // locked instruction per task); a leaving worker's shard folds into retired_ (under mutex_).
    struct Shard {
        Histogram queue_wait, task_duration;
    };
    std::vector<std::shared_ptr<Shard>> shards_;  // under mutex_
    Histogram::Snapshot retired_wait_, retired_duration_;  // under mutex_
    Histogram worker_startup_;
    std::deque<uint64_t> spawn_requested_;  // under mutex_: when each pending spawn was asked
};

}  // namespace unirun::scheduler
