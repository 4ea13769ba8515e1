#include "runtime/scheduler/scheduler.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <thread>

using namespace unirun::scheduler;

namespace {

// Plain std::threads stand in for the embedder's worker threads.
struct ThreadHost {
    std::mutex mutex;
    std::vector<std::thread> threads;
    std::atomic<int> detaches{0}, attaches{0};

    Pool::Spawner spawner() {
        return [this](const std::shared_ptr<Pool> &pool) {
            std::lock_guard lock(mutex);
            threads.emplace_back([this, pool] {
                ParkHooks hooks{[this] { ++detaches; }, [this] { ++attaches; }};
                pool->work(hooks);
            });
            return true;
        };
    }
    void join() {
        std::lock_guard lock(mutex);
        for (auto &t : threads) t.join();
        threads.clear();
    }
};

struct CountingTask : Task {
    std::atomic<int> *ran, *skipped;
    bool fail;
    std::function<void()> body;
    CountingTask(std::atomic<int> *ran, std::atomic<int> *skipped, bool fail = false,
                 std::function<void()> body = {})
        : ran(ran), skipped(skipped), fail(fail), body(std::move(body)) {}
    bool run() override {
        if (body) body();
        ++*ran;
        set_state(Finished);
        return !fail;
    }
    void skip() override { ++*skipped; }
};

}  // namespace

TEST_CASE("every submitted task runs once and the counters add up") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(3, host.spawner());
    std::atomic<int> ran{0}, skipped{0};
    for (int i = 0; i < 1000; ++i)
        REQUIRE(pool->submit(std::make_shared<CountingTask>(&ran, &skipped, i % 10 == 0)) ==
                Pool::Submit::Queued);
    CHECK(pool->shutdown(false).empty());
    host.join();
    CHECK(ran == 1000);
    CHECK(skipped == 0);
    auto c = pool->counters();
    CHECK(c.submitted == 1000);
    CHECK(c.started == 1000);
    CHECK(c.completed == 900);
    CHECK(c.failed == 100);
    CHECK(c.queue_depth == 0);
    CHECK(c.workers_alive == 0);
    CHECK(c.workers_busy == 0);
    CHECK(c.workers_started >= 1);
    CHECK(c.workers_started <= 3);
    CHECK(host.detaches == host.attaches);
}

TEST_CASE("no more workers than max_workers, however many tasks wait") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(2, host.spawner());
    std::atomic<int> ran{0}, skipped{0}, concurrent{0}, peak{0};
    for (int i = 0; i < 50; ++i)
        pool->submit(std::make_shared<CountingTask>(&ran, &skipped, false, [&] {
            int now = ++concurrent;
            int seen = peak.load();
            while (now > seen && !peak.compare_exchange_weak(seen, now)) {}
            std::this_thread::yield();
            --concurrent;
        }));
    pool->shutdown(false);
    host.join();
    CHECK(ran == 50);
    CHECK(peak <= 2);
    CHECK(pool->counters().workers_started <= 2);
}

TEST_CASE("a task cancelled while queued is skipped, never run") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(1, host.spawner());
    std::atomic<int> ran{0}, skipped{0};
    std::mutex gate;
    gate.lock();  // the first task blocks the only worker until the second is cancelled
    pool->submit(std::make_shared<CountingTask>(&ran, &skipped, false, [&] {
        gate.lock();
        gate.unlock();
    }));
    auto second = std::make_shared<CountingTask>(&ran, &skipped);
    pool->submit(second);
    CHECK(second->try_cancel());
    CHECK_FALSE(second->try_start());
    gate.unlock();
    pool->shutdown(false);
    host.join();
    CHECK(ran == 1);
    CHECK(skipped == 1);
    CHECK(second->state() == Task::Cancelled);
    CHECK(pool->counters().cancelled == 1);
}

TEST_CASE("shutdown(cancel_pending) hands back queued tasks; the running one finishes") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(1, host.spawner());
    std::atomic<int> ran{0}, skipped{0};
    std::atomic<bool> started{false};
    std::mutex gate;
    gate.lock();
    auto first = std::make_shared<CountingTask>(&ran, &skipped, false, [&] {
        started = true;
        gate.lock();
        gate.unlock();
    });
    pool->submit(first);
    std::vector<TaskPtr> queued;
    for (int i = 0; i < 5; ++i) {
        queued.push_back(std::make_shared<CountingTask>(&ran, &skipped));
        pool->submit(queued.back());
    }
    queued[2]->try_cancel();  // cancelled by its future already: still handed back for notice
    while (!started) std::this_thread::yield();
    auto cancelled = pool->shutdown(true);
    CHECK(cancelled.size() == 5);
    for (auto &task : cancelled) CHECK(task->state() == Task::Cancelled);
    CHECK(pool->submit(std::make_shared<CountingTask>(&ran, &skipped)) == Pool::Submit::ShutDown);
    gate.unlock();
    host.join();
    CHECK(ran == 1);
    CHECK(first->state() == Task::Finished);
    CHECK(pool->is_shut_down());
}

TEST_CASE("racing submitters, cancellers and a shutdown lose no task") {
    for (int round = 0; round < 20; ++round) {
        ThreadHost host;
        auto pool = std::make_shared<Pool>(2, host.spawner());
        std::atomic<int> ran{0}, skipped{0}, refused{0}, handed_back{0}, cancel_won{0};
        std::vector<std::thread> submitters;
        std::mutex tasks_mutex;
        std::vector<TaskPtr> tasks;
        for (int s = 0; s < 3; ++s)
            submitters.emplace_back([&, s] {
                std::mt19937 rng(round * 7 + s);
                for (int i = 0; i < 300; ++i) {
                    auto task = std::make_shared<CountingTask>(&ran, &skipped);
                    if (pool->submit(task) == Pool::Submit::ShutDown) {
                        ++refused;
                        continue;
                    }
                    if (rng() % 4 == 0 && task->try_cancel()) ++cancel_won;
                    std::lock_guard lock(tasks_mutex);
                    tasks.push_back(task);
                }
            });
        std::this_thread::sleep_for(std::chrono::microseconds(200 * (round % 5)));
        for (auto &task : pool->shutdown(round % 2 == 0)) {
            ++handed_back;
            task->skip();
        }
        for (auto &t : submitters) t.join();
        host.join();
        // Every accepted task ended exactly one way.
        CHECK(ran + skipped == static_cast<int>(tasks.size()));
        CHECK(static_cast<int>(tasks.size()) + refused == 900);
        for (auto &task : tasks)
            CHECK((task->state() == Task::Finished || task->state() == Task::Cancelled));
        auto c = pool->counters();
        CHECK(c.submitted == tasks.size());
        CHECK(c.started == static_cast<uint64_t>(ran.load()));
        CHECK(c.cancelled == static_cast<uint64_t>(skipped.load()));
        CHECK(c.workers_alive == 0);
    }
}

TEST_CASE("idle workers park detached and wake for new work") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(1, host.spawner());
    std::atomic<int> ran{0}, skipped{0};
    pool->submit(std::make_shared<CountingTask>(&ran, &skipped));
    while (ran < 1) std::this_thread::yield();
    // The worker is now parked (or about to be); new work must wake it, not a new worker.
    while (host.detaches < 1) std::this_thread::yield();
    pool->submit(std::make_shared<CountingTask>(&ran, &skipped));
    while (ran < 2) std::this_thread::yield();
    pool->shutdown(false);
    host.join();
    CHECK(pool->counters().workers_started == 1);
    CHECK(host.detaches == host.attaches);
}

TEST_CASE("a spawner that fails leaves the pool usable") {
    std::atomic<int> calls{0};
    ThreadHost host;
    auto real = host.spawner();
    auto pool = std::make_shared<Pool>(1, [&](const std::shared_ptr<Pool> &p) {
        return ++calls == 1 ? false : real(p);
    });
    std::atomic<int> ran{0}, skipped{0};
    pool->submit(std::make_shared<CountingTask>(&ran, &skipped));
    pool->submit(std::make_shared<CountingTask>(&ran, &skipped));
    pool->shutdown(false);
    host.join();
    CHECK(calls == 2);
    CHECK(ran == 2);
}

TEST_CASE("histogram buckets: each observation lands at the first bound not below it") {
    ticks_calibrate();
    Histogram h;
    const auto &bounds = Histogram::bounds_ticks();
    h.record(0);                          // the first bucket
    h.record(bounds[0]);                  // exactly a bound: that bucket (le)
    h.record(bounds[0] + 1);              // just above: the next
    h.record(bounds.back() + 1000);       // beyond the last bound: +Inf
    h.record_owned(bounds[5]);
    auto s = h.snapshot();
    CHECK(s.count() == 5);
    CHECK(s.buckets[0] == 2);
    CHECK(s.buckets[1] == 1);
    CHECK(s.buckets[5] == 1);
    CHECK(s.buckets[Histogram::kBounds] == 1);
    Histogram::Snapshot twice = s;
    twice.merge(s);
    CHECK(twice.count() == 10);
    CHECK(twice.sum_ns == 2 * s.sum_ns);
    // 1-2-5 per decade from 1 µs.
    CHECK(Histogram::bounds_ns()[0] == 1000);
    CHECK(Histogram::bounds_ns()[4] == 20000);
    CHECK(ticks_to_ns(bounds[3]) / 1000 >= 9);  // 10 µs, give or take the calibration
}

TEST_CASE("a pool's snapshot counts every task and times each one that ran, across workers") {
    ThreadHost host;
    auto pool = std::make_shared<Pool>(2, host.spawner());
    pool->set_labels("Named-12", "threads");
    std::atomic<int> ran{0}, skipped{0};
    for (int i = 0; i < 500; ++i)
        REQUIRE(pool->submit(std::make_shared<CountingTask>(&ran, &skipped, i % 5 == 0)) ==
                Pool::Submit::Queued);
    pool->note_rejected();
    pool->shutdown(false);
    host.join();
    PoolSnapshot s = pool->snapshot();
    CHECK(s.executor == "Named");  // the "-N" counter is not part of the label
    CHECK(s.flavor == "threads");
    CHECK(s.completed == 400);
    CHECK(s.failed == 100);
    CHECK(s.rejected == 1);
    CHECK(s.task_duration.count() == 500);  // the workers left: their shards were folded
    CHECK(s.queue_wait.count() == 500);
    CHECK(s.workers_started == s.workers_stopped);
    CHECK(s.worker_startup.count() == s.workers_started);
    // A finished pool folds into the process-wide list under its labels.
    uint64_t id = pool->id();
    pool.reset();
    auto all = snapshot_all_pools();
    auto folded = std::find_if(all.begin(), all.end(), [](const PoolSnapshot &p) { return p.executor == "Named"; });
    REQUIRE(folded != all.end());
    CHECK_FALSE(folded->live);
    CHECK(folded->completed >= 400);
    CHECK(std::none_of(all.begin(), all.end(), [id](const PoolSnapshot &p) { return p.live && p.id == id; }));
}

TEST_CASE("the timeline records spans while on, up to its cap, and counts the rest") {
    ThreadHost host;
    Timeline::start(10);
    auto pool = std::make_shared<Pool>(1, host.spawner());
    std::atomic<int> ran{0}, skipped{0};
    for (int i = 0; i < 25; ++i) {
        auto task = std::make_shared<CountingTask>(&ran, &skipped);
        task->label = "task";
        pool->submit(task);
    }
    pool->shutdown(false);
    host.join();
    Timeline::start(0);
    uint64_t dropped = 0;
    auto events = Timeline::take(dropped);
    CHECK(events.size() == 10);
    CHECK(dropped == 15);
    for (const auto &e : events) {
        CHECK(e.phase == 'X');
        CHECK(e.name == "task");
        CHECK(e.pool_id == pool->id());
    }
    CHECK_FALSE(Timeline::on());
}
