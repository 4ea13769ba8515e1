#include "scheduler/metrics.hpp"

#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <new>
#include <string>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace unirun::scheduler {

uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {
// Set once by ticks_calibrate() (under its once_flag), read-only afterwards.
bool g_use_tsc = false;
double g_ns_per_tick = 1.0;
std::array<uint64_t, Histogram::kBounds> g_bounds_ticks{};

bool kernel_keeps_time_by_tsc() {
    std::ifstream source("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string name;
    return source >> name && name == "tsc";
}
}  // namespace

uint64_t now_ticks() {
#if defined(__x86_64__)
    if (g_use_tsc) return __rdtsc();
#endif
    return now_ns();
}

void ticks_calibrate() {
    static std::once_flag once;
    std::call_once(once, [] {
#if defined(__x86_64__)
        if (kernel_keeps_time_by_tsc()) {
            // Both clocks over ~0.2 ms: the ratio is good to a few parts in 10^4.
            uint64_t ns0 = now_ns(), tsc0 = __rdtsc(), ns1, tsc1;
            do {
                ns1 = now_ns();
                tsc1 = __rdtsc();
            } while (ns1 - ns0 < 200000);
            if (tsc1 > tsc0) {
                g_ns_per_tick = static_cast<double>(ns1 - ns0) / static_cast<double>(tsc1 - tsc0);
                g_use_tsc = true;
            }
        }
#endif
        const auto &ns = Histogram::bounds_ns();
        for (size_t i = 0; i < ns.size(); ++i)
            g_bounds_ticks[i] = static_cast<uint64_t>(static_cast<double>(ns[i]) / g_ns_per_tick);
    });
}

uint64_t ticks_to_ns(uint64_t ticks) {
    return g_use_tsc ? static_cast<uint64_t>(static_cast<double>(ticks) * g_ns_per_tick) : ticks;
}

const std::array<uint64_t, Histogram::kBounds> &Histogram::bounds_ticks() { return g_bounds_ticks; }

uint64_t current_tid() {
    thread_local uint64_t tid = static_cast<uint64_t>(syscall(SYS_gettid));
    return tid;
}

const std::array<uint64_t, Histogram::kBounds> &Histogram::bounds_ns() {
    // 1-2-5 per decade, 1 µs to 50 s: the range from a no-op call to a long batch job.
    static const std::array<uint64_t, kBounds> bounds = [] {
        std::array<uint64_t, kBounds> b{};
        uint64_t decade = 1000;
        for (size_t i = 0; i < kBounds; i += 3, decade *= 10) {
            b[i] = decade;
            b[i + 1] = 2 * decade;
            b[i + 2] = 5 * decade;
        }
        return b;
    }();
    return bounds;
}

namespace {
size_t bucket_of(uint64_t ticks) {
    const auto &bounds = g_bounds_ticks;
    return static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), ticks) - bounds.begin());
}
}  // namespace

void Histogram::record(uint64_t ticks) {
    buckets_[bucket_of(ticks)].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ticks, std::memory_order_relaxed);  // in ticks until snapshot()
}

void Histogram::record_owned(uint64_t ticks) {
    auto &bucket = buckets_[bucket_of(ticks)];
    bucket.store(bucket.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_ns_.store(sum_ns_.load(std::memory_order_relaxed) + ticks, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    for (size_t i = 0; i < buckets_.size(); ++i) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    s.sum_ns = ticks_to_ns(sum_ns_.load(std::memory_order_relaxed));
    return s;
}

uint64_t Histogram::Snapshot::count() const {
    uint64_t total = 0;
    for (uint64_t n : buckets) total += n;
    return total;
}

void Histogram::Snapshot::merge(const Snapshot &other) {
    for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += other.buckets[i];
    sum_ns += other.sum_ns;
}

void PoolSnapshot::fold(const PoolSnapshot &finished) {
    pools += finished.pools;
    max_workers += finished.max_workers;
    submitted += finished.submitted;
    started += finished.started;
    completed += finished.completed;
    failed += finished.failed;
    cancelled += finished.cancelled;
    rejected += finished.rejected;
    workers_started += finished.workers_started;
    workers_stopped += finished.workers_stopped;
    workers_broken += finished.workers_broken;
    queue_wait.merge(finished.queue_wait);
    task_duration.merge(finished.task_duration);
    worker_startup.merge(finished.worker_startup);
}

namespace {
std::atomic<bool> g_metrics_enabled{true};

// The timeline's buffer. Never destroyed: workers may still record while the process exits.
struct TimelineBuffer {
    std::mutex mutex;
    std::vector<TimelineEvent> events;
    size_t capacity = 0;
    uint64_t dropped = 0;
    uint64_t origin = 0;
};
TimelineBuffer &timeline_buffer() {
    static auto *buffer = new TimelineBuffer;
    return *buffer;
}
}  // namespace

void set_metrics_enabled(bool on) { g_metrics_enabled.store(on, std::memory_order_relaxed); }
bool metrics_enabled() { return g_metrics_enabled.load(std::memory_order_relaxed); }

std::atomic<bool> Timeline::on_{false};

void Timeline::start(size_t capacity) {
    ticks_calibrate();
    install_fork_handlers();
    auto &buffer = timeline_buffer();
    {
        std::lock_guard lock(buffer.mutex);
        buffer.capacity = capacity;
        if (buffer.origin == 0) buffer.origin = now_ticks();
        // Reserve a little: the cap bounds memory, a program with few tasks should not pay it.
        buffer.events.reserve(std::min<size_t>(capacity, 4096));
    }
    on_.store(capacity > 0, std::memory_order_release);
}

void Timeline::record(TimelineEvent &&event) {
    auto &buffer = timeline_buffer();
    std::lock_guard lock(buffer.mutex);
    if (buffer.events.size() >= buffer.capacity) {
        ++buffer.dropped;
        return;
    }
    buffer.events.push_back(std::move(event));
}

std::vector<TimelineEvent> Timeline::take(uint64_t &dropped) {
    auto &buffer = timeline_buffer();
    std::lock_guard lock(buffer.mutex);
    dropped = buffer.dropped;
    buffer.dropped = 0;
    std::vector<TimelineEvent> events;
    events.swap(buffer.events);
    return events;
}

uint64_t Timeline::origin_ticks() {
    auto &buffer = timeline_buffer();
    std::lock_guard lock(buffer.mutex);
    return buffer.origin;
}

// fork(): the child is not the process whose timeline was asked for; its copy stops recording,
// and its lock starts fresh (the forking thread may have interrupted a holder).
void Timeline::lock_for_fork() { timeline_buffer().mutex.lock(); }
void Timeline::unlock_after_fork() { timeline_buffer().mutex.unlock(); }

void Timeline::reset_after_fork_in_child() {
    on_.store(false, std::memory_order_relaxed);
    new (&timeline_buffer().mutex) std::mutex;
    timeline_buffer().events.clear();
}

}  // namespace unirun::scheduler
