// What the scheduler measures about itself, process-wide: latency histograms, per-pool
// snapshots (live pools and the folded totals of finished ones), and the task timeline.
// No Python here; runtime/python/observe.cpp turns these into Python objects, and
// unirun._metrics into Prometheus text, JSON and OpenTelemetry instruments.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace unirun::scheduler {

// A monotonic clock in nanoseconds (CLOCK_MONOTONIC through the vDSO: ~25 ns here).
uint64_t now_ns();

// The clock tasks are timed with, in ticks: the CPU's time-stamp counter where the kernel
// itself keeps time by it (clocksource "tsc": invariant and synchronised across CPUs), ~10 ns
// a read; else CLOCK_MONOTONIC nanoseconds. A tiny task costs ~0.5 µs on the scheduler, and
// it is timed twice (submit, end): the clock is most of what metrics cost. Calibrated against
// CLOCK_MONOTONIC once, by the first pool (ticks_calibrate, ~0.2 ms).
uint64_t now_ticks();
void ticks_calibrate();
uint64_t ticks_to_ns(uint64_t ticks);
// later - earlier, or 0 where two CPUs' counters disagree by a few ticks the wrong way.
inline uint64_t ticks_since(uint64_t earlier, uint64_t later) { return later > earlier ? later - earlier : 0; }
// The scheduler's pthread_atfork handlers (installed by the first pool, or the timeline).
void install_fork_handlers();

// A fixed-bucket latency histogram: upper bounds 1 µs, 2 µs, 5 µs, 10 µs ... 50 s, then +Inf.
// record() is two relaxed atomic adds (bucket and sum): no lock, no allocation; the count is
// the buckets' total, so a snapshot taken while tasks finish is always self-consistent enough
// for percentiles (it may miss a task's sum or bucket by one, never mix them up).
class Histogram {
   public:
    static constexpr size_t kBounds = 24;
    static const std::array<uint64_t, kBounds> &bounds_ns();
    static const std::array<uint64_t, kBounds> &bounds_ticks();  // after ticks_calibrate()

    struct Snapshot {
        std::array<uint64_t, kBounds + 1> buckets{};  // last: above the largest bound
        uint64_t sum_ns = 0;
        uint64_t count() const;
        void merge(const Snapshot &other);
    };

    void record(uint64_t ticks);        // any thread
    void record_owned(uint64_t ticks);  // only ever one writing thread: no locked instructions
    Snapshot snapshot() const;          // in nanoseconds

   private:
    std::array<std::atomic<uint64_t>, kBounds + 1> buckets_{};
    std::atomic<uint64_t> sum_ns_{0};
};

// One pool's metrics at one moment, or (live == false) the folded totals of every finished
// pool with the same labels.
struct PoolSnapshot {
    uint64_t id = 0;          // unique per pool in this process; 0 for a folded entry
    std::string executor;     // the label: the pool's name prefix without its "-N" counter
    std::string flavor;       // threads | interpreters | processes
    bool live = true;
    uint64_t pools = 1;       // how many pools this entry covers
    uint64_t max_workers = 0;
    uint64_t submitted = 0, started = 0, completed = 0, failed = 0, cancelled = 0, rejected = 0;
    uint64_t queued = 0, active = 0;
    uint64_t workers_alive = 0, workers_started = 0, workers_stopped = 0, workers_broken = 0;
    Histogram::Snapshot queue_wait, task_duration, worker_startup;

    void fold(const PoolSnapshot &finished);  // add a finished pool's totals to this entry
};

// Every live pool's snapshot and one folded entry per label set of the finished ones.
std::vector<PoolSnapshot> snapshot_all_pools();

// Whether pools made from now on time their tasks (on by default; off only to measure what
// the timing costs, bench metrics_overhead).
void set_metrics_enabled(bool on);
bool metrics_enabled();

// The task timeline (--timeline): spans of tasks on their workers and instant events, in
// memory up to a cap, taken at exit. While off (the default) the scheduler pays one relaxed
// load per task.
struct TimelineEvent {
    char phase = 'X';        // 'X' a complete span, 'i' an instant
    uint64_t pool_id = 0;    // 0: not a pool's (an instant from Python)
    uint64_t tid = 0;        // the OS thread id
    uint64_t ts_ticks = 0, dur_ticks = 0;
    std::string name;
    std::string args_json;   // instants: a JSON object of their fields, or empty
};

class Timeline {
   public:
    // acquire: a thread that sees it on also sees the clock calibrated (start() did it first).
    static bool on() { return on_.load(std::memory_order_acquire); }
    static void start(size_t capacity);
    static void record(TimelineEvent &&event);
    // The events so far (the buffer is emptied) and how many were dropped over the cap.
    static std::vector<TimelineEvent> take(uint64_t &dropped);
    static uint64_t origin_ticks();  // the clock at start(): timestamps count from it
    static void reset_after_fork_in_child();
    static void lock_for_fork();     // prepare: no thread holds the buffer mid-push at fork()
    static void unlock_after_fork();

   private:
    static std::atomic<bool> on_;
};

uint64_t current_tid();

}  // namespace unirun::scheduler
