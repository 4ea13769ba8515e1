#include "python/pool.hpp"

#include "module/unirun_module.hpp"

#include "python/call.hpp"
#include "python/future.hpp"
#include "python/process.hpp"
#include "python/state.hpp"

#include <marshal.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>  // T_PYSSIZET, READONLY (3.12 names them Py_T_PYSSIZET, Py_READONLY)
#endif

#include <atomic>
#include <new>

extern "C" void unirun_forget_subinterpreters_after_fork(void);  // fork_child.c

namespace unirun::python {

namespace {

enum class PoolKind { Threads, Interpreters, Processes };

struct PoolObject {
    PyObject_HEAD
    std::shared_ptr<scheduler::Pool> core;  // placement-constructed
    PoolKind kind;
    PyObject *threads;       // list of threading.Thread workers
    PyObject *name_prefix;   // str
    PyObject *spawn_error;   // the exception of the last failed worker start, if any
    // A BaseException (KeyboardInterrupt, say) raised while a worker was being started by a
    // submit: that submit raises it once its task is queued, as ThreadPoolExecutor's does.
    PyObject *interrupt;
    PyObject *initializer;   // called by each worker before its first task, or None
    std::atomic<int> *spawned;
    long max_tasks_per_child;  // processes: tasks a child runs before it is replaced (0: no limit)
    // The stdlib's own rules, for compat's ProcessPoolExecutor: functions cross by pickle only
    // (not by their code), and a child's call or result that cannot be unpickled breaks the pool.
    bool strict;
#if PY_VERSION_HEX < 0x030C0000
    PyObject *weakrefs;      // 3.11 has no managed weak references
#endif
};

PoolObject *as_pool(PyObject *self) { return reinterpret_cast<PoolObject *>(self); }

// A lifecycle event of the pool (unirun._events: the "unirun" logger, --trace, --timeline).
// An Exception from the reporting is dropped (monitoring must not fail the work); an interrupt
// stays set for the caller to raise.
bool pool_event(PyObject *self, const char *event) {
    Ref args = Ref::steal(Py_BuildValue("(Os)", self, event));
    Ref done = args ? call_native("pool_event", args.get()) : Ref();
    if (done) return true;
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return true;
    }
    return false;
}

// Starts one worker: threading.Thread(target=_unirun._work, args=(pool,), name=...).
// Runs attached to the pool's interpreter (the submitting thread).
bool spawn_worker(PyObject *self) {
    PoolObject *pool = as_pool(self);
    int index = pool->spawned->fetch_add(1);
    Ref name = Ref::steal(PyUnicode_FromFormat("%U_%d", pool->name_prefix, index));
    Ref args = name ? Ref::steal(Py_BuildValue("(OO)", self, name.get())) : Ref();
    Ref started = args ? call_native("start_worker", args.get()) : Ref();
    if (!started) {
        PyObject *error = PyErr_GetRaisedException();
        // Not a failure to start if it is no Exception: a signal handler raised meanwhile.
        PyObject *PoolObject::*slot = PyErr_GivenExceptionMatches(error, PyExc_Exception)
                                          ? &PoolObject::spawn_error
                                          : &PoolObject::interrupt;
        Py_BEGIN_CRITICAL_SECTION(self);
        Py_XSETREF(pool->*slot, error);
        Py_END_CRITICAL_SECTION();
        return false;
    }
    // (thread, interrupt): the thread runs; an interrupt came while start() waited for it.
    PyObject *thread = PyTuple_GET_ITEM(started.get(), 0);
    PyObject *interrupt = PyTuple_GET_ITEM(started.get(), 1);
    if (interrupt != Py_None) {
        Py_BEGIN_CRITICAL_SECTION(self);
        Py_XSETREF(pool->interrupt, Py_NewRef(interrupt));
        Py_END_CRITICAL_SECTION();
    }
    // The thread runs now and counts itself in the pool: report success even if it cannot be
    // listed (out of memory), or the pool would count it twice.
    if (PyList_Append(pool->threads, thread) < 0) PyErr_WriteUnraisable(self);
    return true;
}

PyObject *pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static const char *keywords[] = {"kind", "max_workers", "name_prefix", "initializer",
                                     "max_tasks_per_child", "strict", nullptr};
    const char *kind;
    Py_ssize_t max_workers;
    PyObject *name_prefix;
    PyObject *initializer = Py_None;
    long max_tasks_per_child = 0;
    int strict = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "snU|O$lp:Pool", const_cast<char **>(keywords), &kind,
                                     &max_workers, &name_prefix, &initializer, &max_tasks_per_child,
                                     &strict))
        return nullptr;
    if (max_tasks_per_child < 0) {
        PyErr_SetString(PyExc_ValueError, "max_tasks_per_child must be >= 1, or 0 for no limit");
        return nullptr;
    }
    if (initializer != Py_None && !PyCallable_Check(initializer)) {
        PyErr_SetString(PyExc_TypeError, "initializer must be a callable");
        return nullptr;
    }
    PoolKind pool_kind;
    if (std::string_view(kind) == "threads") {
        pool_kind = PoolKind::Threads;
    } else if (std::string_view(kind) == "interpreters") {
        if (!own_gil_interpreters_usable()) {
            PyErr_Format(PyExc_RuntimeError,
                         "no interpreters pool on this runtime: %s (_unirun.OWN_GIL_INTERPRETERS "
                         "is False)", own_gil_interpreters_missing());
            return nullptr;
        }
        pool_kind = PoolKind::Interpreters;
    } else if (std::string_view(kind) == "processes") {
        pool_kind = PoolKind::Processes;
    } else {
        PyErr_Format(PyExc_ValueError, "Pool kind must be 'threads', 'interpreters' or 'processes', not %R",
                     PyTuple_GET_ITEM(args, 0));
        return nullptr;
    }
    if (max_workers <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_workers must be greater than 0");
        return nullptr;
    }
    // A child forked while subinterpreter workers exist must not die of them.
    if (pool_kind == PoolKind::Interpreters) unirun_forget_subinterpreters_after_fork();
    PyObject *self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    PoolObject *pool = as_pool(self);
    pool->kind = pool_kind;
    pool->name_prefix = Py_NewRef(name_prefix);
    pool->initializer = Py_NewRef(initializer);
    pool->max_tasks_per_child = max_tasks_per_child;
    pool->strict = strict;
    pool->threads = PyList_New(0);
    pool->spawned = new std::atomic<int>(0);
    // The spawner holds the Python object weakly: threads hold it strongly while they run.
    new (&pool->core) std::shared_ptr<scheduler::Pool>(std::make_shared<scheduler::Pool>(
        static_cast<size_t>(max_workers),
        [self](const std::shared_ptr<scheduler::Pool> &) { return spawn_worker(self); }));
    if (!pool->threads) {
        Py_DECREF(self);
        return nullptr;
    }
    const char *prefix = PyUnicode_AsUTF8(name_prefix);
    if (!prefix) {
        Py_DECREF(self);
        return nullptr;
    }
    pool->core->set_labels(prefix, kind);
    if (!pool_event(self, "pool.start")) {
        Py_DECREF(self);
        return nullptr;
    }
    return self;
}

int pool_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(as_pool(self)->threads);
    Py_VISIT(as_pool(self)->spawn_error);
    Py_VISIT(as_pool(self)->interrupt);
    Py_VISIT(as_pool(self)->initializer);
    return 0;
}

int pool_clear(PyObject *self) {
    Py_CLEAR(as_pool(self)->threads);
    Py_CLEAR(as_pool(self)->spawn_error);
    Py_CLEAR(as_pool(self)->interrupt);
    Py_CLEAR(as_pool(self)->initializer);
    return 0;
}

void pool_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyObject_ClearWeakRefs(self);
    PoolObject *pool = as_pool(self);
    // Workers hold the pool object while they run, so none is left: unqueued tasks go with it.
    // (An exception may be propagating through this dealloc: keep it out of the callbacks.)
    PyObject *propagating = PyErr_GetRaisedException();
    for (auto &task : pool->core->shutdown(true)) task->skip();
    PyErr_SetRaisedException(propagating);
    pool_clear(self);
    Py_CLEAR(pool->name_prefix);
    pool->core.~shared_ptr();
    delete pool->spawned;
    type->tp_free(self);
    Py_DECREF(type);
}

PyObject *shut_down_error(PoolObject *pool) {
    pool->core->note_rejected();
    PyErr_SetString(PyExc_RuntimeError, "cannot schedule new futures after shutdown");
    return nullptr;
}

// The name of a task's span on the timeline: the callable's qualified name (a partial's
// function's), else its type's. Only asked for while the timeline records.
std::string timeline_label(ModuleState *state, PyObject *fn) {
    PyObject *error = PyErr_GetRaisedException();  // none expected; keep the state as it was
    PyObject *target = fn;
    Ref inner;
    if (!PyFunction_Check(fn) && !PyCFunction_Check(fn) && !PyMethod_Check(fn)) {
        inner = Ref::steal(PyObject_GetAttrString(fn, "func"));  // functools.partial
        if (inner && PyCallable_Check(inner.get())) target = inner.get();
        PyErr_Clear();
    }
    // Through the attribute, not the function's field: a concurrent fn.__qualname__ = ... is
    // then the function's own business (its getter takes a reference).
    Ref name = Ref::steal(PyObject_GetAttr(target, state->qualname));
    if (!name || !PyUnicode_Check(name.get())) {
        PyErr_Clear();
        name = Ref::steal(PyObject_GetAttr(reinterpret_cast<PyObject *>(Py_TYPE(target)), state->qualname));
    }
    Py_ssize_t size = 0;
    const char *text = name && PyUnicode_Check(name.get()) ? PyUnicode_AsUTF8AndSize(name.get(), &size) : nullptr;
    std::string label = text ? std::string(text, static_cast<size_t>(size)) : "call";
    PyErr_Clear();
    PyErr_SetRaisedException(error);
    return label;
}

// A plain function that needs nothing but its code and the builtins (no closure, no defaults,
// no globals read) crosses to an interpreter worker by its code, as CPython 3.14's interpreters
// share it: so functions defined under `if __name__ == "__main__":`, in -c code or locally work
// as they do with the stdlib's InterpreterPoolExecutor. unirun._native decides once per code
// object: (its marshalled code, the builtin names it reads), cached; each submit then checks that
// this function's globals shadow none of those names. Null (no error) for every other callable.
Ref function_by_code(ModuleState *state, PyObject *fn) {
    if (!PyFunction_Check(fn)) return Ref();
    Ref code, globals;
    bool plain = true;
    Py_BEGIN_CRITICAL_SECTION(fn);  // a concurrent fn.__defaults__ = ... must not free them mid-read
    PyObject *defaults = PyFunction_GET_DEFAULTS(fn), *kwdefaults = PyFunction_GET_KW_DEFAULTS(fn);
    plain = !PyFunction_GET_CLOSURE(fn) && !(defaults && PyTuple_GET_SIZE(defaults)) &&
            !(kwdefaults && PyDict_Check(kwdefaults) && PyDict_GET_SIZE(kwdefaults));
    code = Ref::steal(Py_NewRef(PyFunction_GET_CODE(fn)));
    globals = Ref::steal(Py_NewRef(PyFunction_GET_GLOBALS(fn)));
    Py_END_CRITICAL_SECTION();
    if (!plain) return Ref();
    PyObject *known = nullptr;
    if (PyDict_GetItemRef(state->by_code, code.get(), &known) < 0) return Ref();
    if (!known) {
        Ref args = Ref::steal(PyTuple_Pack(1, fn));
        Ref decided = args ? call_native("function_by_code", args.get()) : Ref();
        if (!decided) {
            // Deciding failed (not an interrupt): pickle will carry it, or say why not.
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return Ref();
            PyErr_Clear();
            return Ref();
        }
        if (PyDict_GET_SIZE(state->by_code) >= 4096) PyDict_Clear(state->by_code);  // bounded
        if (PyDict_SetItem(state->by_code, code.get(), decided.get()) < 0) return Ref();
        known = decided.release();
    }
    Ref entry = Ref::steal(known);
    if (!PyTuple_Check(entry.get()) || PyTuple_GET_SIZE(entry.get()) != 2) return Ref();  // None
    PyObject *names = PyTuple_GET_ITEM(entry.get(), 1);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); ++i) {
        int shadowed = PyDict_Check(globals.get()) ? PyDict_Contains(globals.get(), PyTuple_GET_ITEM(names, i)) : 1;
        if (shadowed < 0) return Ref();
        if (shadowed) return Ref();  // this function's module has its own: it crosses by name
    }
    return Ref::steal(Py_NewRef(PyTuple_GET_ITEM(entry.get(), 0)));
}

PyObject *pool_get_kind(PyObject *self, void *);

// From this size a bytes-like argument travels beside the pickled call, not in it
// (unirun._native.LARGE_BUFFER).
constexpr Py_ssize_t kLargeBuffer = 1 << 16;

bool large_buffer(PyObject *value) {
    if (PyBytes_CheckExact(value)) return PyBytes_GET_SIZE(value) >= kLargeBuffer;
    if (PyByteArray_CheckExact(value)) return PyByteArray_GET_SIZE(value) >= kLargeBuffer;
    if (PyMemoryView_Check(value)) return PyMemoryView_GET_BUFFER(value)->len >= kLargeBuffer;
    return false;
}

bool has_large_buffer(PyObject *args, PyObject *kwargs) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); ++i)
        if (large_buffer(PyTuple_GET_ITEM(args, i))) return true;
    if (!kwargs) return false;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    bool found = false;
    Py_BEGIN_CRITICAL_SECTION(kwargs);
    while (!found && PyDict_Next(kwargs, &position, &key, &value)) found = large_buffer(value);
    Py_END_CRITICAL_SECTION();
    return found;
}

// submit(fn, args, kwargs) -> Future. For interpreter pools the call is pickled here, so an
// unpicklable callable or argument fails at once, in the caller.
PyObject *pool_submit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    ModuleState *module_state = state_of(Py_TYPE(self));
    if (nargs < 3 || nargs > 4 || !PyTuple_Check(args[1]) ||
        (args[2] != Py_None && !PyDict_Check(args[2])) ||
        (nargs == 4 && args[3] != Py_None &&
         !PyObject_TypeCheck(args[3], reinterpret_cast<PyTypeObject *>(module_state->future_type)))) {
        PyErr_SetString(PyExc_TypeError,
                        "submit(fn, args: tuple, kwargs: dict | None, start_with: Future | None = None)");
        return nullptr;
    }
    PoolObject *pool = as_pool(self);
    PyObject *kwargs = args[2] == Py_None ? nullptr : args[2];
    if (pool->core->is_shut_down()) return shut_down_error(pool);
    CallPtr call;
    if (pool->kind == PoolKind::Threads) {
        call = std::make_shared<Call>(Call::Kind::Thread, PyInterpreterState_Get());
        call->set_call(args[0], args[1], kwargs);
    } else {
        ModuleState *state = state_of(Py_TYPE(self));
        Ref by_code = pool->strict ? Ref() : function_by_code(state, args[0]);
        if (!by_code && PyErr_Occurred()) return nullptr;
        Ref packed = Ref::steal(by_code ? PyTuple_Pack(4, Py_None, args[1], kwargs ? kwargs : Py_None, by_code.get())
                                        : PyTuple_Pack(3, args[0], args[1], kwargs ? kwargs : Py_None));
        Ref protocol = Ref::steal(PyLong_FromLong(5));
        if (!packed || !protocol) return nullptr;
        Ref payload;
        std::vector<PyObject *> buffers;
        if (has_large_buffer(args[1], kwargs)) {
            // Large bytes-like arguments travel beside the pickle (protocol 5 out-of-band).
            Ref parts = Ref::steal(PyTuple_Pack(5, args[0], args[1], kwargs ? kwargs : Py_None,
                                                pool->strict ? Py_True : Py_False,
                                                pool->kind == PoolKind::Interpreters ? Py_True : Py_False));
            Ref pickled = parts ? call_native("dumps_call_oob", parts.get()) : Ref();
            if (!pickled) return nullptr;
            if (!PyTuple_Check(pickled.get()) || PyTuple_GET_SIZE(pickled.get()) != 2 ||
                !PyList_Check(PyTuple_GET_ITEM(pickled.get(), 1))) {
                PyErr_SetString(PyExc_SystemError, "dumps_call_oob returned a bad value");
                return nullptr;
            }
            PyObject *views = PyTuple_GET_ITEM(pickled.get(), 1);
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(views); ++i) {
                PyObject *view = PyList_GET_ITEM(views, i);
                if (!PyMemoryView_Check(view) || !PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(view), 'C')) {
                    for (PyObject *taken : buffers) Py_DECREF(taken);
                    PyErr_SetString(PyExc_SystemError, "dumps_call_oob returned a bad buffer");
                    return nullptr;
                }
                buffers.push_back(Py_NewRef(view));
            }
            payload = Ref::steal(Py_NewRef(PyTuple_GET_ITEM(pickled.get(), 0)));
        } else {
            payload = Ref::steal(
                PyObject_CallFunctionObjArgs(state->pickle_dumps, packed.get(), protocol.get(), nullptr));
        }
        if (!payload) {
            // Ask unirun._native which part cannot be pickled, for an error that names it;
            // anything but an Exception (Ctrl-C while pickling) is the caller's.
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return nullptr;
            PyErr_Clear();
            Ref kind = Ref::steal(pool_get_kind(self, nullptr));
            Ref call_parts = kind ? Ref::steal(PyTuple_Pack(5, args[0], args[1], kwargs ? kwargs : Py_None,
                                                            pool->strict ? Py_True : Py_False, kind.get()))
                                  : Ref();
            payload = call_parts ? call_native("dumps_call", call_parts.get()) : Ref();
            if (!payload) return nullptr;
        }
        char *data;
        Py_ssize_t size;
        if (PyBytes_AsStringAndSize(payload.get(), &data, &size) < 0) {
            for (PyObject *taken : buffers) Py_DECREF(taken);
            return nullptr;
        }
        call = std::make_shared<Call>(pool->kind == PoolKind::Processes ? Call::Kind::Process
                                                                         : Call::Kind::Interpreter,
                                      PyInterpreterState_Get());
        call->set_payload(std::string(data, static_cast<size_t>(size)));
        call->set_buffers(std::move(buffers));
    }
    if (scheduler::Timeline::on()) call->label = timeline_label(module_state, args[0]);
    if (nargs == 4 && args[3] != Py_None)
        call->start_with(reinterpret_cast<FutureObject *>(args[3])->call);
    Ref future = Ref::steal(new_future(reinterpret_cast<PyTypeObject *>(module_state->future_type), call));
    if (!future) return nullptr;
    if (pool->core->submit(call) == scheduler::Pool::Submit::ShutDown) return shut_down_error(pool);
    // Another thread's submit may be starting a worker too: these two fields change under the
    // pool's critical section (free-threaded builds).
    PyObject *interrupt = nullptr, *spawn_error = nullptr;
    bool no_worker = pool->core->counters().workers_alive == 0;
    Py_BEGIN_CRITICAL_SECTION(self);
    interrupt = std::exchange(pool->interrupt, nullptr);
    if (!interrupt && pool->spawn_error && no_worker && PyList_GET_SIZE(pool->threads) == 0)
        spawn_error = std::exchange(pool->spawn_error, nullptr);
    Py_END_CRITICAL_SECTION();
    if (interrupt) {  // the task is queued and will run; the interrupt is the caller's
        PyErr_SetRaisedException(interrupt);
        return nullptr;
    }
    if (spawn_error) {
        // No worker exists and none could be started: end this future and say why.
        call->cancel(future.get());
        call->skip();
        PyErr_SetRaisedException(spawn_error);
        return nullptr;
    }
    return future.release();
}

// shutdown(cancel_futures): stop taking work; cancel what is queued if asked. The caller joins
// the worker threads (they leave once the queue is empty).
PyObject *pool_shutdown(PyObject *self, PyObject *cancel_futures) {
    int cancel = PyObject_IsTrue(cancel_futures);
    if (cancel < 0) return nullptr;
    bool first = !as_pool(self)->core->is_shut_down();
    // Every queued call is notified; a callback's Ctrl-C is raised once all are.
    for (auto &task : as_pool(self)->core->shutdown(cancel))
        static_cast<Call *>(task.get())->notify_skipped();
    if (PyErr_Occurred()) return nullptr;
    // Reported once the pool is shut down: an interrupt raised while reporting cannot leave
    // it taking work.
    if (first && !pool_event(self, "pool.shutdown")) return nullptr;
    Py_RETURN_NONE;
}

// forget_thread(thread): a worker thread that is leaving is no longer listed.
PyObject *pool_forget_thread(PyObject *self, PyObject *thread) {
    PoolObject *pool = as_pool(self);
    int error = 0;
    Py_BEGIN_CRITICAL_SECTION(pool->threads);
    for (Py_ssize_t i = PyList_GET_SIZE(pool->threads) - 1; i >= 0; --i) {
        if (PyList_GET_ITEM(pool->threads, i) == thread) {
            error = PyList_SetSlice(pool->threads, i, i + 1, nullptr);
            break;
        }
    }
    Py_END_CRITICAL_SECTION();
    if (error < 0) return nullptr;
    Py_RETURN_NONE;
}

// worker_start_failed(): a worker thread leaves before working (its initializer failed).
PyObject *pool_worker_start_failed(PyObject *self, PyObject *) {
    as_pool(self)->core->worker_start_failed();
    Py_RETURN_NONE;
}

// fail_pending(exception): the pool is broken. Stop taking work, and end every queued call
// with `exception` (cancelled ones are reported cancelled). Attached to the pool's interpreter.
PyObject *pool_fail_pending(PyObject *self, PyObject *exception) {
    if (!PyExceptionInstance_Check(exception)) {
        PyErr_SetString(PyExc_TypeError, "fail_pending() needs an exception instance");
        return nullptr;
    }
    // Each call fails with its own exception (a copy, with the same cause): one object raised
    // by many result() calls would gather every caller's frames in its traceback.
    Ref copy_module = Ref::steal(PyImport_ImportModule("copy"));
    if (!copy_module) PyErr_Clear();  // then they share it
    bool first = true;
    uint64_t failed = 0, cancelled = 0;
    for (auto &task : as_pool(self)->core->drain()) {
        auto *call = static_cast<Call *>(task.get());
        if (call->try_start()) {
            Ref own = first || !copy_module ? Ref::borrow(exception)
                                            : Ref::steal(PyObject_CallMethod(copy_module.get(), "copy", "O", exception));
            if (!own || !PyExceptionInstance_Check(own.get())) {
                PyErr_Clear();
                own = Ref::borrow(exception);
            } else if (own.get() != exception) {
                PyException_SetCause(own.get(), PyException_GetCause(exception));
            }
            first = false;
            ++failed;
            call->finish_local(nullptr, own.get(), true);
        } else {
            ++cancelled;
            call->notify_skipped();
        }
    }
    as_pool(self)->core->note_failed(failed);
    as_pool(self)->core->note_cancelled(cancelled);
    if (PyErr_Occurred()) return nullptr;  // a callback's Ctrl-C, once every call has ended
    Py_RETURN_NONE;
}

// note_worker_broken(): a worker died under its tasks (a process worker's child), for metrics.
PyObject *pool_note_worker_broken(PyObject *self, PyObject *) {
    as_pool(self)->core->note_worker_broken();
    Py_RETURN_NONE;
}

// note_rejected(): the executor refused a submit itself (shut down, broken), for metrics.
PyObject *pool_note_rejected(PyObject *self, PyObject *) {
    as_pool(self)->core->note_rejected();
    Py_RETURN_NONE;
}

PyObject *pool_id(PyObject *self, void *) { return PyLong_FromUnsignedLongLong(as_pool(self)->core->id()); }

PyObject *pool_label(PyObject *self, void *) {
    std::string label = as_pool(self)->core->executor_label();
    return PyUnicode_DecodeUTF8(label.data(), static_cast<Py_ssize_t>(label.size()), "replace");
}

PyObject *pool_counters(PyObject *self, PyObject *) {
    scheduler::Counters c = as_pool(self)->core->counters();
    return Py_BuildValue(
        "{s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K, s:K}", "submitted", c.submitted, "started",
        c.started, "completed", c.completed, "failed", c.failed, "cancelled", c.cancelled,
        "queue_depth", c.queue_depth, "workers_alive", c.workers_alive, "workers_busy",
        c.workers_busy, "workers_started", c.workers_started);
}

PyObject *pool_get_threads(PyObject *self, void *) {
    return PyList_GetSlice(as_pool(self)->threads, 0, PY_SSIZE_T_MAX);
}

PyObject *pool_get_max_workers(PyObject *self, void *) {
    return PyLong_FromSize_t(as_pool(self)->core->max_workers());
}

PyObject *pool_get_kind(PyObject *self, void *) {
    switch (as_pool(self)->kind) {
        case PoolKind::Threads: return PyUnicode_FromString("threads");
        case PoolKind::Interpreters: return PyUnicode_FromString("interpreters");
        default: return PyUnicode_FromString("processes");
    }
}

PyObject *pool_get_max_tasks_per_child(PyObject *self, void *) {
    long value = as_pool(self)->max_tasks_per_child;
    return value ? PyLong_FromLong(value) : Py_NewRef(Py_None);
}

PyObject *pool_get_initializer(PyObject *self, void *) {
    return Py_NewRef(as_pool(self)->initializer);
}

PyObject *pool_get_shut_down(PyObject *self, void *) {
    return PyBool_FromLong(as_pool(self)->core->is_shut_down());
}

PyMethodDef pool_methods[] = {
    {"submit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(pool_submit)),
     METH_FASTCALL, "submit(fn, args, kwargs, start_with=None) -> Future; start_with: a future "
     "that goes running when this call starts (the call does not run if it cannot)"},
    {"shutdown", pool_shutdown, METH_O, "shutdown(cancel_futures): stop taking work"},
    {"counters", pool_counters, METH_NOARGS, "the scheduler's counters, as a dict"},
    {"forget_thread", pool_forget_thread, METH_O, "a worker thread that leaves (internal)"},
    {"worker_start_failed", pool_worker_start_failed, METH_NOARGS,
     "a started worker thread will not work (internal)"},
    {"fail_pending", pool_fail_pending, METH_O, "fail_pending(exception): end queued calls with it"},
    {"note_worker_broken", pool_note_worker_broken, METH_NOARGS, "a worker died under its tasks (metrics)"},
    {"note_rejected", pool_note_rejected, METH_NOARGS, "the executor refused a submit (metrics)"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef pool_getset[] = {
    {"threads", pool_get_threads, nullptr, "the worker threads started so far", nullptr},
    {"max_workers", pool_get_max_workers, nullptr, "the most workers this pool starts", nullptr},
    {"kind", pool_get_kind, nullptr, "'threads', 'interpreters' or 'processes'", nullptr},
    {"id", pool_id, nullptr, "this pool's number in unirun.metrics() and the timeline", nullptr},
    {"label", pool_label, nullptr, "the executor label of this pool's metrics", nullptr},
    {"max_tasks_per_child", pool_get_max_tasks_per_child, nullptr,
     "processes: tasks a child runs before it is replaced, or None", nullptr},
    {"is_shut_down", pool_get_shut_down, nullptr, "True once shutdown() was called", nullptr},
    {"initializer", pool_get_initializer, nullptr, "called by each worker first, or None", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

#if PY_VERSION_HEX < 0x030C0000
PyMemberDef pool_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(PoolObject, weakrefs), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};
#define UNIRUN_POOL_WEAKREF_FLAG 0
#else
#define UNIRUN_POOL_WEAKREF_FLAG Py_TPFLAGS_MANAGED_WEAKREF
#endif

PyType_Slot pool_slots[] = {
    {Py_tp_new, reinterpret_cast<void *>(pool_new)},
    {Py_tp_dealloc, reinterpret_cast<void *>(pool_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void *>(pool_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(pool_clear)},
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
#if PY_VERSION_HEX < 0x030C0000
    {Py_tp_members, pool_members},
#endif
    {Py_tp_doc, const_cast<char *>("Pool(kind, max_workers, name_prefix): unirun's scheduler.")},
    {0, nullptr},
};

PyType_Spec pool_spec = {
    "_unirun.Pool",
    sizeof(PoolObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | UNIRUN_POOL_WEAKREF_FLAG,
    pool_slots,
};

scheduler::ParkHooks park_hooks(PyThreadState **saved) {
    return {[saved] { *saved = PyEval_SaveThread(); }, [saved] { PyEval_RestoreThread(*saved); }};
}

// The worker loop with `context` as this thread's worker.
void work_with(PoolObject *pool, WorkerContext *context) {
    current_worker = context;
    PyThreadState *saved = nullptr;
    pool->core->work(park_hooks(&saved));
    current_worker = nullptr;
}

void work_in_this_interpreter(PoolObject *pool) {
    WorkerContext context;
    context.home = PyThreadState_Get();
    work_with(pool, &context);
}

// What a new subinterpreter needs from its creator: sys.path and how to find __main__.
bool worker_init_data(PyObject *initializer, std::string *out) {
    Ref args = Ref::steal(PyTuple_Pack(1, initializer));
    Ref info = args ? call_native("worker_init_info", args.get()) : Ref();
    Ref data = info ? Ref::steal(PyMarshal_WriteObjectToString(info.get(), Py_MARSHAL_VERSION)) : Ref();
    char *bytes;
    Py_ssize_t size;
    if (!data || PyBytes_AsStringAndSize(data.get(), &bytes, &size) < 0) return false;
    out->assign(bytes, static_cast<size_t>(size));
    return true;
}

// In the new subinterpreter: sys.path as the creator's, the context's references to pickle
// and unirun._native there, then unirun._native.prepare_worker (the initializer).
bool prepare_subinterpreter(const std::string &init, WorkerContext *context) {
    Ref info = Ref::steal(PyMarshal_ReadObjectFromString(init.data(), static_cast<Py_ssize_t>(init.size())));
    if (!info || !PyTuple_Check(info.get()) || PyTuple_GET_SIZE(info.get()) != 5) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "bad worker init data");
        return false;
    }
    PyObject *path = PySys_GetObject("path");
    if (!path || PyList_SetSlice(path, 0, PY_SSIZE_T_MAX, PyTuple_GET_ITEM(info.get(), 0)) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "no sys.path");
        return false;
    }
    if (!unirun::module::prepare_shims()) return false;
    Ref native = Ref::steal(PyImport_ImportModule("unirun._native"));
    Ref pickle = Ref::steal(PyImport_ImportModule("pickle"));
    if (!native || !pickle) return false;
    context->native = native.release();
    context->loads = PyObject_GetAttrString(pickle.get(), "loads");
    context->dumps = PyObject_GetAttrString(pickle.get(), "dumps");
    context->name = Py_NewRef(PyTuple_GET_ITEM(info.get(), 3));
    if (!context->loads || !context->dumps) return false;
    Ref args = Ref::steal(PyTuple_Pack(1, info.get()));
    return args && call_native("prepare_worker", args.get());
}

std::string describe_current_error(const char *what) {
    Ref exception = Ref::steal(PyErr_GetRaisedException());
    Ref text = exception ? Ref::steal(PyObject_Str(exception.get())) : Ref();
    std::string message = what;
    if (exception) {
        message += ": ";
        message += Py_TYPE(exception.get())->tp_name;
        const char *utf8 = text ? PyUnicode_AsUTF8(text.get()) : nullptr;
        if (utf8 && *utf8) message += std::string(": ") + utf8;
    }
    PyErr_Clear();
    return message;
}

// Leaves the worker's subinterpreter for good, back attached to the creator's thread state.
void end_subinterpreter(WorkerContext *context, PyThreadState *sub) {
    adopt_worker_thread(context);  // before teardown, while threading (if imported) still works
    Py_CLEAR(context->native);
    Py_CLEAR(context->name);
    Py_CLEAR(context->loads);
    Py_CLEAR(context->dumps);
    Py_CLEAR(context->by_code);
    Py_EndInterpreter(sub);  // on this thread, as the C API requires; leaves no thread state
    PyEval_RestoreThread(context->home);
    context->in_subinterpreter = false;
}

void work_in_subinterpreter(PoolObject *pool) {
    WorkerContext context;
    context.home = PyThreadState_Get();
    context.in_subinterpreter = true;

    std::string init;
    if (!worker_init_data(pool->initializer, &init)) {
        // e.g. an initializer that cannot cross
        Ref error = Ref::steal(PyErr_GetRaisedException());
        context.broken = error ? report_start_error(reinterpret_cast<PyObject *>(pool), error.get())
                               : report_start_message(reinterpret_cast<PyObject *>(pool), "cannot prepare an interpreter worker");
        work_with(pool, &context);
        return;
    }

#if UNIRUN_HAS_OWN_GIL_INTERPRETERS
    PyInterpreterConfig config = {};
    config.use_main_obmalloc = 0;
    config.allow_fork = 0;
    config.allow_exec = 0;
    config.allow_threads = 1;
    config.allow_daemon_threads = 0;
    config.check_multi_interp_extensions = 1;
    config.gil = PyInterpreterConfig_OWN_GIL;
    PyThreadState *sub = nullptr;
    PyStatus status = Py_NewInterpreterFromConfig(&sub, &config);
#else  // pool_new refuses the kind; kept whole so the worker loop reads the same everywhere
    PyThreadState *sub = nullptr;
    PyStatus status = PyStatus_Error("no own-GIL subinterpreters before Python 3.12");
#endif
    if (PyStatus_Exception(status)) {  // still attached to home: fail the work, not the process
        context.broken = std::string("cannot create a subinterpreter: ") +
                         (status.err_msg ? status.err_msg : "unknown error");
        context.in_subinterpreter = false;
        work_with(pool, &context);
        return;
    }
    if (!prepare_subinterpreter(init, &context)) {
        // The initializer (or the worker's own start) failed: carry the exception and its
        // traceback home and report it there (compat's InterpreterPoolExecutor logs it and
        // breaks, as the stdlib's does) while the subinterpreter still exists (ending it waits
        // for threads the initializer may have started); then end it. The tasks this worker
        // takes fail with BrokenInterpreterPool.
        std::string failure, message;
        bool carried = false;
        if (context.native && PyErr_Occurred()) {
            Ref error = Ref::steal(PyErr_GetRaisedException());
            Ref data = Ref::steal(PyObject_CallMethod(context.native, "exception_outcome", "OO",
                                                      error.get(), Py_False));
            char *bytes;
            Py_ssize_t size;
            if (data && PyBytes_AsStringAndSize(data.get(), &bytes, &size) == 0) {
                failure.assign(bytes, static_cast<size_t>(size));
                carried = true;
            } else {
                PyErr_SetRaisedException(error.release());
            }
        }
        if (!carried) message = describe_current_error("the interpreter worker could not start");
        PyErr_Clear();
        {
            SwitchTo creator(context.home);
            context.broken = carried ? report_start_failure(reinterpret_cast<PyObject *>(pool), failure) : report_start_message(reinterpret_cast<PyObject *>(pool), message);
            PyErr_Clear();
        }
        end_subinterpreter(&context, sub);  // the initializer may have imported threading
        work_with(pool, &context);
        return;
    }
    work_with(pool, &context);
    end_subinterpreter(&context, sub);
}

// A process worker: this thread, attached to the pool's interpreter, drives one child process.
void work_with_a_process(PoolObject *pool) {
    WorkerContext context;
    context.home = PyThreadState_Get();
    block_sigpipe_on_this_thread();
    ProcessChild child(reinterpret_cast<PyObject *>(pool), pool->max_tasks_per_child, pool->strict);
    context.process = &child;
    child.start(&context.broken);  // the child a submit started; it is awaited with a task in hand
    work_with(pool, &context);
    child.stop();
}

}  // namespace

// In the creator's interpreter: unirun._native.worker_start_failed(pool, error) reports a
// worker's failed start (an exception of the creator's interpreter: the handler compat's
// InterpreterPoolExecutor registered logs it and breaks the pool) and returns the message its
// tasks fail with.
std::string report_start_error(PyObject *pool, PyObject *error) {
    Ref report = Ref::steal(PyTuple_Pack(2, pool, error));
    Ref message = report ? call_native("worker_start_failed", report.get()) : Ref();
    const char *text = message ? PyUnicode_AsUTF8(message.get()) : nullptr;
    if (!text) return describe_current_error("the worker could not start");
    return text;
}

// The same for a failure known only by its message (it could not be carried as an exception).
std::string report_start_message(PyObject *pool, const std::string &message) {
    Ref error = Ref::steal(PyObject_CallFunction(PyExc_RuntimeError, "s", message.c_str()));
    if (!error) return describe_current_error(message.c_str());
    return report_start_error(pool, error.get());
}

// The same for a failure carried out of the worker's subinterpreter as bytes.
std::string report_start_failure(PyObject *pool, const std::string &failure) {
    Ref args = Ref::steal(Py_BuildValue("(Oy#)", Py_False, failure.data(),
                                        static_cast<Py_ssize_t>(failure.size())));
    Ref error = args ? call_native("loads_outcome", args.get()) : Ref();
    if (!error) {
        PyErr_WriteUnraisable(pool);
        return report_start_message(pool, "a worker could not start (its exception could not be "
                                          "rebuilt in the creator's interpreter)");
    }
    return report_start_error(pool, error.get());
}

PyObject *make_pool_type(PyObject *module) {
    return PyType_FromModuleAndSpec(module, &pool_spec, nullptr);
}

PyObject *work(PyObject *module, PyObject *pool_object) {
    ModuleState *state = static_cast<ModuleState *>(PyModule_GetState(module));
    if (!PyObject_TypeCheck(pool_object, reinterpret_cast<PyTypeObject *>(state->pool_type))) {
        PyErr_SetString(PyExc_TypeError, "_work() needs a _unirun.Pool");
        return nullptr;
    }
    PoolObject *pool = as_pool(pool_object);
    // A worker thread's start and end are events too; a signal cannot be raised here (this
    // is never the main thread), so the reporting's errors are dropped.
    if (!pool_event(pool_object, "worker.start")) PyErr_Clear();
    if (pool->kind == PoolKind::Threads)
        work_in_this_interpreter(pool);
    else if (pool->kind == PoolKind::Interpreters)
        work_in_subinterpreter(pool);
    else
        work_with_a_process(pool);
    if (!pool_event(pool_object, "worker.stop")) PyErr_Clear();
    Py_RETURN_NONE;
}

}  // namespace unirun::python
