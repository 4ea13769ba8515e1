// _unirun's observability functions: the scheduler's metrics and timeline (scheduler/metrics.hpp)
// as Python objects, and the import ledger's native half. unirun._metrics and unirun._ledger
// make them public; these are internal.
#include "python/observe.hpp"

#include "python/ref.hpp"
#include "scheduler/metrics.hpp"
#include "scheduler/scheduler.hpp"

#include <mutex>
#include <string>
#include <vector>

namespace unirun::python {

namespace {

PyObject *histogram_object(const scheduler::Histogram::Snapshot &h) {
    // (bounds in seconds, bucket counts with +Inf last, sum in seconds)
    const auto &bounds = scheduler::Histogram::bounds_ns();
    Ref upper = Ref::steal(PyTuple_New(static_cast<Py_ssize_t>(bounds.size())));
    Ref counts = Ref::steal(PyTuple_New(static_cast<Py_ssize_t>(h.buckets.size())));
    if (!upper || !counts) return nullptr;
    for (size_t i = 0; i < bounds.size(); ++i) {
        PyObject *bound = PyFloat_FromDouble(static_cast<double>(bounds[i]) / 1e9);
        if (!bound) return nullptr;
        PyTuple_SET_ITEM(upper.get(), static_cast<Py_ssize_t>(i), bound);
    }
    for (size_t i = 0; i < h.buckets.size(); ++i) {
        PyObject *count = PyLong_FromUnsignedLongLong(h.buckets[i]);
        if (!count) return nullptr;
        PyTuple_SET_ITEM(counts.get(), static_cast<Py_ssize_t>(i), count);
    }
    return Py_BuildValue("{s:O, s:O, s:d}", "bounds", upper.get(), "buckets", counts.get(), "sum",
                         static_cast<double>(h.sum_ns) / 1e9);
}

PyObject *pool_snapshot_object(const scheduler::PoolSnapshot &s) {
    Ref wait = Ref::steal(histogram_object(s.queue_wait));
    Ref duration = wait ? Ref::steal(histogram_object(s.task_duration)) : Ref();
    Ref startup = duration ? Ref::steal(histogram_object(s.worker_startup)) : Ref();
    if (!startup) return nullptr;
    return Py_BuildValue(
        "{s:K, s:s, s:s, s:O, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K,"
        " s:O, s:O, s:O}",
        "id", static_cast<unsigned long long>(s.id), "executor", s.executor.c_str(), "flavor",
        s.flavor.c_str(), "live", s.live ? Py_True : Py_False, "pools",
        static_cast<unsigned long long>(s.pools), "max_workers",
        static_cast<unsigned long long>(s.max_workers), "submitted",
        static_cast<unsigned long long>(s.submitted), "started", static_cast<unsigned long long>(s.started),
        "completed", static_cast<unsigned long long>(s.completed), "failed",
        static_cast<unsigned long long>(s.failed), "cancelled", static_cast<unsigned long long>(s.cancelled),
        "rejected", static_cast<unsigned long long>(s.rejected), "queued",
        static_cast<unsigned long long>(s.queued), "active", static_cast<unsigned long long>(s.active),
        "workers_alive", static_cast<unsigned long long>(s.workers_alive), "workers_started",
        static_cast<unsigned long long>(s.workers_started), "workers_stopped",
        static_cast<unsigned long long>(s.workers_stopped), "workers_broken",
        static_cast<unsigned long long>(s.workers_broken), "queue_wait", wait.get(), "task_duration",
        duration.get(), "worker_startup", startup.get());
}

// The ledger's process-wide notes: what one interpreter saw (a subinterpreter worker refusing
// a module, an import re-enabling the GIL) for unirun.ledger() in the main one to list.
struct LedgerNote {
    std::string kind, module, detail;
    long long interpreter;
};
std::mutex &ledger_mutex() {
    static auto *mutex = new std::mutex;
    return *mutex;
}
std::vector<LedgerNote> &ledger_notes_store() {
    static auto *notes = new std::vector<LedgerNote>;
    return *notes;
}
constexpr size_t kMaxLedgerNotes = 10000;

}  // namespace

PyObject *metrics_snapshot(PyObject *, PyObject *) {
    std::vector<scheduler::PoolSnapshot> all;
    Py_BEGIN_ALLOW_THREADS  // the registry lock may wait for a pool's lock
    all = scheduler::snapshot_all_pools();
    Py_END_ALLOW_THREADS
    Ref list = Ref::steal(PyList_New(0));
    if (!list) return nullptr;
    for (const auto &entry : all) {
        Ref item = Ref::steal(pool_snapshot_object(entry));
        if (!item || PyList_Append(list.get(), item.get()) < 0) return nullptr;
    }
    return list.release();
}

// configure_observability(metrics: bool, timeline_capacity: int): whether pools made from now
// on time their tasks; the timeline records up to timeline_capacity events (0: it stops).
PyObject *configure_observability(PyObject *, PyObject *args) {
    int metrics;
    Py_ssize_t capacity;
    if (!PyArg_ParseTuple(args, "pn:configure_observability", &metrics, &capacity)) return nullptr;
    if (capacity < 0) {
        PyErr_SetString(PyExc_ValueError, "timeline_capacity must be >= 0");
        return nullptr;
    }
    scheduler::set_metrics_enabled(metrics);
    scheduler::Timeline::start(static_cast<size_t>(capacity));  // 0: stop recording
    Py_RETURN_NONE;
}

// timeline_instant(name, args_json): an instant event on the calling thread, now.
PyObject *timeline_instant(PyObject *, PyObject *args) {
    const char *name, *fields;
    if (!PyArg_ParseTuple(args, "ss:timeline_instant", &name, &fields)) return nullptr;
    if (scheduler::Timeline::on())
        scheduler::Timeline::record({'i', 0, scheduler::current_tid(), scheduler::now_ticks(), 0, name, fields});
    Py_RETURN_NONE;
}

// timeline_take() -> (events, dropped): events as (phase, pool_id, tid, ts_us, dur_us, name,
// args_json), timestamps from the timeline's start; the buffer is emptied.
PyObject *timeline_take(PyObject *, PyObject *) {
    uint64_t dropped = 0;
    std::vector<scheduler::TimelineEvent> events;
    Py_BEGIN_ALLOW_THREADS
    events = scheduler::Timeline::take(dropped);
    Py_END_ALLOW_THREADS
    const uint64_t origin = scheduler::Timeline::origin_ticks();
    Ref list = Ref::steal(PyList_New(0));
    if (!list) return nullptr;
    for (const auto &e : events) {
        double ts = e.ts_ticks >= origin ? static_cast<double>(scheduler::ticks_to_ns(e.ts_ticks - origin)) / 1e3 : 0.0;
        Ref item = Ref::steal(Py_BuildValue("(CKKddss)", e.phase, static_cast<unsigned long long>(e.pool_id),
                                            static_cast<unsigned long long>(e.tid), ts,
                                            static_cast<double>(scheduler::ticks_to_ns(e.dur_ticks)) / 1e3, e.name.c_str(),
                                            e.args_json.c_str()));
        if (!item) {
            // A name that is not UTF-8 cannot be one: skip the event rather than lose the rest.
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return nullptr;
            PyErr_Clear();
            ++dropped;
            continue;
        }
        if (PyList_Append(list.get(), item.get()) < 0) return nullptr;
    }
    return Py_BuildValue("(OK)", list.get(), static_cast<unsigned long long>(dropped));
}

PyObject *timeline_on(PyObject *, PyObject *) { return PyBool_FromLong(scheduler::Timeline::on()); }

// ledger_note(kind, module, detail): recorded for every interpreter of the process to see.
PyObject *ledger_note(PyObject *, PyObject *args) {
    const char *kind, *module, *detail;
    if (!PyArg_ParseTuple(args, "sss:ledger_note", &kind, &module, &detail)) return nullptr;
    long long interpreter = PyInterpreterState_GetID(PyInterpreterState_Get());
    std::lock_guard lock(ledger_mutex());
    auto &notes = ledger_notes_store();
    if (notes.size() < kMaxLedgerNotes) notes.push_back({kind, module, detail, interpreter});
    Py_RETURN_NONE;
}

// ledger_notes() -> [(kind, module, detail, interpreter id)]
PyObject *ledger_notes(PyObject *, PyObject *) {
    std::vector<LedgerNote> notes;
    {
        std::lock_guard lock(ledger_mutex());
        notes = ledger_notes_store();
    }
    Ref list = Ref::steal(PyList_New(0));
    if (!list) return nullptr;
    for (const auto &n : notes) {
        Ref item = Ref::steal(Py_BuildValue("(sssL)", n.kind.c_str(), n.module.c_str(), n.detail.c_str(),
                                            n.interpreter));
        if (!item || PyList_Append(list.get(), item.get()) < 0) return nullptr;
    }
    return list.release();
}

// module_declarations(module) -> None for a module not made by an extension's PyModuleDef, else
// (multi_phase, gil, multiple_interpreters, gil_in_effect): the Py_mod_gil and
// Py_mod_multiple_interpreters slot values as declared (None where not declared), and on a
// free-threaded runtime the module's GIL setting after its import (None where unknown).
PyObject *module_declarations(PyObject *, PyObject *module) {
    if (!PyModule_Check(module)) {
        PyErr_SetString(PyExc_TypeError, "module_declarations() needs a module");
        return nullptr;
    }
    PyModuleDef *def = PyModule_GetDef(module);
    if (!def) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *gil = Py_None, *multi = Py_None;
    Ref gil_value, multi_value;
    bool multi_phase = def->m_slots != nullptr;
    for (PyModuleDef_Slot *slot = def->m_slots; slot && slot->slot; ++slot) {
#ifdef Py_mod_gil
        if (slot->slot == Py_mod_gil) {
            gil_value = Ref::steal(PyLong_FromVoidPtr(slot->value));
            if (!gil_value) return nullptr;
            gil = gil_value.get();
        }
#endif
#ifdef Py_mod_multiple_interpreters
        if (slot->slot == Py_mod_multiple_interpreters) {
            multi_value = Ref::steal(PyLong_FromVoidPtr(slot->value));
            if (!multi_value) return nullptr;
            multi = multi_value.get();
        }
#endif
    }
    // A free-threaded module's GIL setting as the import left it (a single-phase module's
    // PyUnstable_Module_SetGIL, or its slot): PyModuleObject's md_gil, its last field in
    // 3.13 and 3.14 (Include/internal/pycore_moduleobject.h). None elsewhere.
    PyObject *in_effect = Py_None;
    Ref in_effect_value;
#if defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030F0000
    if (Py_IS_TYPE(module, &PyModule_Type) && PyModule_Type.tp_basicsize >= static_cast<Py_ssize_t>(sizeof(void *))) {
        void *md_gil = *reinterpret_cast<void **>(reinterpret_cast<char *>(module) + PyModule_Type.tp_basicsize -
                                                 sizeof(void *));
        in_effect_value = Ref::steal(PyLong_FromVoidPtr(md_gil));
        if (!in_effect_value) return nullptr;
        in_effect = in_effect_value.get();
    }
#endif
    return Py_BuildValue("(OOOO)", multi_phase ? Py_True : Py_False, gil, multi, in_effect);
}

}  // namespace unirun::python
