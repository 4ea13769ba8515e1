#include "scheduler/scheduler.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define UNIRUN_CPU_RELAX() _mm_pause()
#else
#define UNIRUN_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace unirun::scheduler {

Pool::Pool(size_t max_workers, Spawner spawner)
    : max_workers_(max_workers == 0 ? 1 : max_workers), spawner_(std::move(spawner)) {}

Pool::~Pool() = default;

Pool::Submit Pool::submit(TaskPtr task) {
    bool spawn = false, wake = false;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) return Submit::ShutDown;
        queue_.push_back(std::move(task));
        queued_.store(queue_.size(), std::memory_order_release);
        submitted_.fetch_add(1, std::memory_order_relaxed);
        // Like ThreadPoolExecutor: a new worker only when nobody is idle to take this task.
        if (idle_ + spawning_ < queue_.size() && alive_ + spawning_ < max_workers_) {
            ++spawning_;
            spawn = true;
        }
        wake = idle_ > 0;
    }
    if (wake) wakeup_.notify_one();
    if (spawn && !spawner_(shared_from_this())) {
        std::lock_guard lock(mutex_);
        --spawning_;
    }
    return Submit::Queued;
}

std::vector<TaskPtr> Pool::shutdown(bool cancel_pending) {
    std::vector<TaskPtr> cancelled;
    {
        std::lock_guard lock(mutex_);
        shut_down_ = true;
        if (cancel_pending) {
            // Tasks whose future was cancelled already still need their waiters notified.
            for (auto &task : queue_)
                if (task->try_cancel() || task->state() == Task::Cancelled)
                    cancelled.push_back(task);
            queue_.clear();
            queued_.store(0, std::memory_order_release);
        }
    }
    cancelled_.fetch_add(cancelled.size(), std::memory_order_relaxed);
    wakeup_.notify_all();
    return cancelled;
}

void Pool::worker_start_failed() {
    std::lock_guard lock(mutex_);
    --spawning_;
}

std::vector<TaskPtr> Pool::drain() {
    std::vector<TaskPtr> queued;
    {
        std::lock_guard lock(mutex_);
        shut_down_ = true;
        queued.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
        queue_.clear();
        queued_.store(0, std::memory_order_release);
    }
    wakeup_.notify_all();
    return queued;
}

bool Pool::is_shut_down() const {
    std::lock_guard lock(mutex_);
    return shut_down_;
}

void Pool::wake_all() { wakeup_.notify_all(); }

bool Pool::spin_for_work() const {
    constexpr int kSpins = 2000;  // a few tens of microseconds
    for (int i = 0; i < kSpins; ++i) {
        if (queued_.load(std::memory_order_acquire) > 0) return true;
        UNIRUN_CPU_RELAX();
    }
    return false;
}

TaskPtr Pool::take(const ParkHooks &hooks) {
    std::unique_lock lock(mutex_);
    for (;;) {
        if (!queue_.empty()) {
            TaskPtr task = std::move(queue_.front());
            queue_.pop_front();
            queued_.store(queue_.size(), std::memory_order_release);
            return task;
        }
        if (shut_down_) return nullptr;
        // Never sleep attached: release the lock, detach, then park. Re-attach with the lock
        // released too, since attaching can wait for a thread that is submitting to us.
        lock.unlock();
        hooks.detach();
        if (spin_for_work()) {
            hooks.attach();
            lock.lock();
            continue;
        }
        lock.lock();
        ++idle_;
        wakeup_.wait(lock, [this] { return !queue_.empty() || shut_down_; });
        --idle_;
        lock.unlock();
        hooks.attach();
        lock.lock();
    }
}

void Pool::work(const ParkHooks &hooks) {
    {
        std::lock_guard lock(mutex_);
        --spawning_;
        ++alive_;
    }
    workers_started_.fetch_add(1, std::memory_order_relaxed);
    while (TaskPtr task = take(hooks)) {
        if (task->try_start()) {
            started_.fetch_add(1, std::memory_order_relaxed);
            busy_.fetch_add(1, std::memory_order_relaxed);
            bool ok = task->run();
            busy_.fetch_sub(1, std::memory_order_relaxed);
            (ok ? completed_ : failed_).fetch_add(1, std::memory_order_relaxed);
        } else {
            cancelled_.fetch_add(1, std::memory_order_relaxed);
            task->skip();
        }
    }
    std::lock_guard lock(mutex_);
    --alive_;
}

Counters Pool::counters() const {
    Counters c;
    {
        std::lock_guard lock(mutex_);
        c.queue_depth = queue_.size();
        c.workers_alive = alive_;
    }
    c.submitted = submitted_.load();
    c.started = started_.load();
    c.completed = completed_.load();
    c.failed = failed_.load();
    c.cancelled = cancelled_.load();
    c.workers_busy = busy_.load();
    c.workers_started = workers_started_.load();
    return c;
}

}  // namespace unirun::scheduler
