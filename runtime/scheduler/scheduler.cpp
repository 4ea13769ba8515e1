#include "scheduler/scheduler.hpp"

#include <pthread.h>

#include <algorithm>
#include <new>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define UNIRUN_CPU_RELAX() _mm_pause()
#else
#define UNIRUN_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace unirun::scheduler {

namespace {
thread_local Pool *tl_pool = nullptr;          // the pool this worker thread works for
thread_local const Task *tl_task = nullptr;    // the task it is running
thread_local bool tl_finishing = false;        // counted in tl_pool->finishing_
}  // namespace

// Every live pool, for the fork handlers.
struct ForkGuard {
    static std::mutex &registry_mutex() {
        static std::mutex *mutex = new std::mutex;  // never destroyed: used by atfork handlers
        return *mutex;
    }
    static std::vector<Pool *> &pools() {
        static auto *pools = new std::vector<Pool *>;
        return *pools;
    }
    // The folded metrics of finished pools, one entry per label set (bounded: past
    // kMaxFinished label sets, the rest fold into one entry labelled "(other)").
    static constexpr size_t kMaxFinished = 1000;
    static std::vector<PoolSnapshot> &finished() {
        static auto *finished = new std::vector<PoolSnapshot>;
        return *finished;
    }
    static void fold_finished(PoolSnapshot snapshot) {
        auto &all = finished();
        auto fold_into = [&](const std::string &executor) {
            for (auto &entry : all) {
                if (entry.executor == executor && entry.flavor == snapshot.flavor) {
                    entry.fold(snapshot);
                    return true;
                }
            }
            return false;
        };
        if (fold_into(snapshot.executor)) return;
        if (all.size() >= kMaxFinished) {
            snapshot.executor = "(other)";
            if (fold_into(snapshot.executor)) return;
        }
        snapshot.id = 0;
        snapshot.live = false;
        snapshot.queued = snapshot.active = snapshot.workers_alive = 0;
        all.push_back(std::move(snapshot));
    }
    static void prepare() {
        Timeline::lock_for_fork();
        registry_mutex().lock();
        for (Pool *pool : pools()) pool->mutex_.lock();
    }
    static void parent() {
        for (Pool *pool : pools()) pool->mutex_.unlock();
        registry_mutex().unlock();
        Timeline::unlock_after_fork();
    }
    static void child() {
        for (Pool *pool : pools()) pool->reset_after_fork_in_child();
        new (&registry_mutex()) std::mutex;
        Timeline::reset_after_fork_in_child();
    }
    static void install() {
        static std::once_flag once;
        std::call_once(once, [] { pthread_atfork(prepare, parent, child); });
    }
    static void add(Pool *pool) {
        install();
        std::lock_guard lock(registry_mutex());
        pools().push_back(pool);
    }
    static void remove(Pool *pool) {
        PoolSnapshot last = pool->snapshot();
        std::lock_guard lock(registry_mutex());
        auto &all = pools();
        all.erase(std::remove(all.begin(), all.end(), pool), all.end());
        fold_finished(std::move(last));
    }
};

void Pool::reset_after_fork_in_child() {
    // The locks were held by the forking thread (prepare); the threads that waited on the
    // condition variable do not exist here. Both start fresh.
    new (&mutex_) std::mutex;
    new (&wakeup_) std::condition_variable;
    idle_ = spawning_ = finishing_ = alive_ = 0;
    spawn_requested_.clear();
    shards_.clear();  // their workers do not exist here
    busy_.store(0);
    tl_pool = nullptr;
    tl_task = nullptr;
    tl_finishing = false;
}

void note_task_finishing(const Task *task) {
    if (tl_pool == nullptr || tl_task != task || tl_finishing) return;
    std::lock_guard lock(tl_pool->mutex_);
    ++tl_pool->finishing_;
    tl_finishing = true;
}

namespace {
std::atomic<uint64_t> g_next_pool_id{1};
}

Pool::Pool(size_t max_workers, Spawner spawner)
    : max_workers_(max_workers == 0 ? 1 : max_workers),
      spawner_(std::move(spawner)),
      id_(g_next_pool_id.fetch_add(1, std::memory_order_relaxed)),
      timed_(metrics_enabled()) {
    ticks_calibrate();
    ForkGuard::add(this);
}

void install_fork_handlers() { ForkGuard::install(); }

void Pool::set_labels(std::string executor, std::string flavor) {
    // "ThreadPoolExecutor-12" and "ThreadPoolExecutor-13" are one executor kind: one series.
    auto dash = executor.find_last_of('-');
    if (dash != std::string::npos && dash + 1 < executor.size() &&
        executor.find_first_not_of("0123456789", dash + 1) == std::string::npos)
        executor.resize(dash);
    std::lock_guard lock(mutex_);
    executor_label_ = std::move(executor);
    flavor_label_ = std::move(flavor);
}

PoolSnapshot Pool::snapshot() const {
    PoolSnapshot s;
    {
        std::lock_guard lock(mutex_);
        s.executor = executor_label_;
        s.flavor = flavor_label_;
        s.queued = queue_.size();
        s.workers_alive = alive_;
        s.queue_wait = retired_wait_;
        s.task_duration = retired_duration_;
        for (const auto &shard : shards_) {
            s.queue_wait.merge(shard->queue_wait.snapshot());
            s.task_duration.merge(shard->task_duration.snapshot());
        }
    }
    s.id = id_;
    s.max_workers = max_workers_;
    s.submitted = submitted_.load(std::memory_order_relaxed);
    s.started = started_.load(std::memory_order_relaxed);
    s.completed = completed_.load(std::memory_order_relaxed);
    s.failed = failed_.load(std::memory_order_relaxed);
    s.cancelled = cancelled_.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    s.active = busy_.load(std::memory_order_relaxed);
    s.workers_started = workers_started_.load(std::memory_order_relaxed);
    s.workers_stopped = workers_stopped_.load(std::memory_order_relaxed);
    s.workers_broken = workers_broken_.load(std::memory_order_relaxed);
    s.worker_startup = worker_startup_.snapshot();
    return s;
}

std::vector<PoolSnapshot> snapshot_all_pools() {
    std::vector<PoolSnapshot> all;
    std::lock_guard lock(ForkGuard::registry_mutex());
    for (Pool *pool : ForkGuard::pools()) all.push_back(pool->snapshot());
    for (const auto &entry : ForkGuard::finished()) all.push_back(entry);
    return all;
}

Pool::~Pool() { ForkGuard::remove(this); }

Pool::Submit Pool::submit(TaskPtr task) {
    bool spawn = false, wake = false;
    const uint64_t now = timed_ ? now_ticks() : 0;
    task->enqueued_ticks = now;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) return Submit::ShutDown;
        queue_.push_back(std::move(task));
        queued_.store(queue_.size(), std::memory_order_release);
        submitted_.fetch_add(1, std::memory_order_relaxed);
        // Like ThreadPoolExecutor: a new worker only when nobody is idle to take this task.
        if (idle_ + spawning_ + finishing_ < queue_.size() && alive_ + spawning_ < max_workers_) {
            ++spawning_;
            spawn_requested_.push_back(now);
            spawn = true;
        }
        wake = idle_ > 0;
    }
    if (wake) wakeup_.notify_one();
    if (spawn && !spawner_(shared_from_this())) {
        std::lock_guard lock(mutex_);
        --spawning_;
        if (!spawn_requested_.empty()) spawn_requested_.pop_front();
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
    workers_broken_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    --spawning_;
    if (!spawn_requested_.empty()) spawn_requested_.pop_front();
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

TaskPtr Pool::take(const ParkHooks &hooks, bool &waited) {
    waited = false;
    std::unique_lock lock(mutex_);
    if (tl_finishing) {
        --finishing_;
        tl_finishing = false;
    }
    for (;;) {
        if (!queue_.empty()) {
            TaskPtr task = std::move(queue_.front());
            queue_.pop_front();
            queued_.store(queue_.size(), std::memory_order_release);
            return task;
        }
        if (shut_down_) return nullptr;
        // Never sleep attached: release the lock, detach, then spin and park. Re-attach with
        // the lock released too, since attaching can wait for a thread that is submitting to
        // us. A spinning worker counts as idle, so a submit reuses it.
        ++idle_;
        waited = true;
        lock.unlock();
        hooks.detach();
        bool found = spin_for_work();
        lock.lock();
        if (!found) wakeup_.wait(lock, [this] { return !queue_.empty() || shut_down_; });
        --idle_;
        lock.unlock();
        hooks.attach();
        lock.lock();
    }
}

void Pool::work(const ParkHooks &hooks) {
    uint64_t requested = 0;
    auto shard = std::make_shared<Shard>();
    {
        std::lock_guard lock(mutex_);
        --spawning_;
        ++alive_;
        if (!spawn_requested_.empty()) {
            requested = spawn_requested_.front();
            spawn_requested_.pop_front();
        }
        shards_.push_back(shard);
    }
    if (timed_ && requested) worker_startup_.record(ticks_since(requested, now_ticks()));
    uint64_t last_end = 0;  // when this worker's previous task ended
    workers_started_.fetch_add(1, std::memory_order_relaxed);
    Pool *outer_pool = tl_pool;  // restored on leaving, for a thread that works for two pools
    tl_pool = this;
    bool waited = false;
    while (TaskPtr task = take(hooks, waited)) {
        if (task->start()) {
            started_.fetch_add(1, std::memory_order_relaxed);
            busy_.fetch_add(1, std::memory_order_relaxed);
            tl_task = task.get();
            const bool timeline = Timeline::on();
            // A worker that took this task straight after its last one (no wait) starts it
            // when that one ended, give or take the queue's lock: one clock read saved a task.
            uint64_t begun = 0;
            if (timed_ || timeline)
                begun = waited || !last_end ? now_ticks() : std::max(last_end, task->enqueued_ticks);
            if (timed_ && task->enqueued_ticks)
                shard->queue_wait.record_owned(ticks_since(task->enqueued_ticks, begun));
            bool ok = task->run();
            if (timed_ || timeline) {
                last_end = now_ticks();
                // (begun may come from another CPU's clock: never below zero)
                if (timed_) shard->task_duration.record_owned(ticks_since(begun, last_end));
                if (timeline)
                    Timeline::record({'X', id_, current_tid(), begun, ticks_since(begun, last_end),
                                      std::move(task->label), {}});
            }
            tl_task = nullptr;
            busy_.fetch_sub(1, std::memory_order_relaxed);
            (ok ? completed_ : failed_).fetch_add(1, std::memory_order_relaxed);
        } else {
            cancelled_.fetch_add(1, std::memory_order_relaxed);
            task->skip();
        }
    }
    std::lock_guard lock(mutex_);
    if (tl_finishing) {
        --finishing_;
        tl_finishing = false;
    }
    tl_pool = outer_pool;
    --alive_;
    retired_wait_.merge(shard->queue_wait.snapshot());
    retired_duration_.merge(shard->task_duration.snapshot());
    shards_.erase(std::remove(shards_.begin(), shards_.end(), shard), shards_.end());
    workers_stopped_.fetch_add(1, std::memory_order_relaxed);
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
