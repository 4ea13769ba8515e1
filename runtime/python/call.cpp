#include "python/call.hpp"

#include "python/process.hpp"

#include <marshal.h>

#include <cmath>

namespace unirun::python {

thread_local WorkerContext *current_worker = nullptr;

Ref call_native(const char *name, PyObject *args) {
    Ref module = Ref::steal(PyImport_ImportModule("unirun._native"));
    if (!module) return {};
    Ref function = Ref::steal(PyObject_GetAttrString(module.get(), name));
    if (!function) return {};
    return Ref::steal(PyObject_CallObject(function.get(), args));
}

PyThreadState *attached_thread_state() {
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

namespace {

bool attached_to(PyInterpreterState *interp) {
    PyThreadState *current = attached_thread_state();
    return current && PyThreadState_GetInterpreter(current) == interp;
}

// Runs f() attached to `owner`, from whichever thread this is. A thread attached elsewhere
// (an interpreter worker finishing its owner's call) switches to its home thread state there,
// any other borrows a temporary one. An exception left by f() in a thread state that is not
// the caller's cannot propagate: it is reported as unraisable there.
template <class F, class G>
auto with_owner(PyInterpreterState *owner, F &&f, G &&no_thread_state) -> decltype(f()) {
    if (attached_to(owner)) return f();
    if (current_worker && current_worker->home &&
        PyThreadState_GetInterpreter(current_worker->home) == owner) {
        SwitchTo home(current_worker->home);
        auto result = f();
        if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
        return result;
    }
    PyThreadState *temporary = PyThreadState_New(owner);
    if (!temporary) return no_thread_state();  // out of memory
    PyThreadState *previous = attached_thread_state() ? PyEval_SaveThread() : nullptr;
    PyEval_RestoreThread(temporary);
    auto result = f();
    if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
    PyThreadState_Clear(temporary);
    PyThreadState_DeleteCurrent();
    if (previous) PyEval_RestoreThread(previous);
    return result;
}

int release_pending(void *object) {
    Py_DECREF(static_cast<PyObject *>(object));
    return 0;
}

// Drops an owner object from a thread that may be attached elsewhere. Only an interpreter
// worker can hold the last reference of a call there (a value set by set_result on a running
// interpreter call whose future is gone): the owner is then, in practice, the main
// interpreter, which takes the reference back through a pending call. An object of another
// owner is leaked rather than touched under the wrong interpreter.
void release_owner_object(PyInterpreterState *owner, PyObject *object) {
    if (!object) return;
    if (attached_to(owner)) {
        Py_DECREF(object);
    } else if (owner == PyInterpreterState_Main()) {
        if (Py_AddPendingCall(release_pending, object) < 0) { /* queue full: leaked */ }
    }
}

}  // namespace

Call::~Call() {
    // Only thread-kind and manual calls hold Python objects (and an interpreter call a value
    // set on it locally); future_ is always released by the final state change.
    release_owner_object(owner_, fn_);
    release_owner_object(owner_, args_);
    release_owner_object(owner_, kwargs_);
    release_owner_object(owner_, value_);
    for (PyObject *buffer : buffers_) release_owner_object(owner_, buffer);
}

void Call::drop_payload() {
    std::string().swap(payload_);
    for (PyObject *buffer : buffers_) Py_DECREF(buffer);
    buffers_.clear();
}

void Call::set_call(PyObject *fn, PyObject *args, PyObject *kwargs) {
    fn_ = Py_NewRef(fn);
    args_ = Py_NewRef(args);
    kwargs_ = Py_XNewRef(kwargs);
}

std::unique_lock<std::mutex> Call::lock_attached() const {
    std::unique_lock lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) {
        if (attached_thread_state()) {
            Py_BEGIN_ALLOW_THREADS;
            lock.lock();
            Py_END_ALLOW_THREADS;
        } else {
            lock.lock();
        }
    }
    return lock;
}

bool Call::is_done() const {
    auto lock = lock_attached();
    return done_locked();
}

Call::Commit Call::commit_locked(Event event, Delivery *delivery, PyObject **release) {
    switch (event) {
        case Event::Result:
        case Event::Exception: {
            auto s = state();
            if (s != Pending && s != Running) return Refused;
            // Only Finished is set under this lock, so no outcome is here yet. Write it before
            // the state that publishes it; take it back if a start or a cancel won meanwhile.
            if (delivery) {
                outcome_ = delivery->kind;
                value_ = std::exchange(delivery->value, nullptr);
                remote_ = std::move(delivery->data);
                encoding_ = delivery->encoding;
            }
            if (!transition(Pending, Finished) && !transition(Running, Finished)) {
                if (delivery) {
                    delivery->value = std::exchange(value_, nullptr);
                    delivery->data = std::move(remote_);
                }
                outcome_ = Outcome::None;
                return Refused;
            }
            break;
        }
        case Event::Cancel: {
            auto s = state();
            if (s == Cancelled && !cancel_announced_) {
                cancel_announced_ = true;  // cancelled by shutdown: announce it now
                return Changed;
            }
            if (s == Cancelled || s == CancelledNotified) return Already;
            if (!try_cancel()) return Refused;
            cancel_announced_ = true;
            return Changed;  // not final: the Cancelled event still follows
        }
        case Event::Cancelled:
            if (!transition(Cancelled, CancelledNotified)) return Refused;
            break;
    }
    *release = std::exchange(future_, nullptr);
    return Changed;
}

Call::Commit Call::commit(Event event, Delivery *delivery, PyObject **release) {
    Commit result;
    {
        auto lock = lock_attached();
        result = commit_locked(event, delivery, release);
    }
    if (result == Changed) done_cv_.notify_all();
    return result;
}

PyObject *Call::observed_future() {
    auto lock = lock_attached();
    return final_locked() ? nullptr : Py_XNewRef(future_);
}

Call::Commit Call::change(Event event, Delivery *delivery, PyObject *future_hint) {
    const bool finishing = event == Event::Result || event == Event::Exception;
    {
        auto lock = lock_attached();
        // Unobserved, or observed and already final (nothing left to tell anyone): natively.
        if (!observed_ || final_locked()) {
            if (finishing && !observed_) scheduler::note_task_finishing(this);
            PyObject *release = nullptr;
            Commit result = commit_locked(event, delivery, &release);
            lock.unlock();
            if (result == Changed) done_cv_.notify_all();
            return result;
        }
    }
    Commit result = with_owner(
        owner_, [&] { return deliver_observed(future_hint, *this, event, delivery); },
        [&] {  // no way into the owner (out of memory): the change itself is not lost
            PyObject *leaked = nullptr;  // the future's reference cannot be dropped from here
            return commit(event, delivery, &leaked);
        });
    // Only now, after the callbacks, is this worker about to be free: a callback that submits
    // work and waits for it must not count on it (ThreadPoolExecutor starts a thread then).
    if (finishing) scheduler::note_task_finishing(this);
    return result;
}

bool Call::finish_local(PyObject *future, PyObject *value, bool is_exception) {
    Delivery delivery;
    delivery.kind = is_exception ? Outcome::Exception : Outcome::Value;
    delivery.value = Py_NewRef(value);
    Commit result = change(is_exception ? Event::Exception : Event::Result, &delivery, future);
    Py_XDECREF(delivery.value);  // refused: still ours, and this thread is attached to the owner
    return result == Changed;
}

bool Call::start() {
    if (!try_start()) return false;
    auto other = std::move(start_with_);
    if (other && !other->try_start()) {
        // The other side was cancelled first: this call is cancelled with it, not run.
        transition(Running, Cancelled);
        return false;
    }
    return true;
}

bool Call::run() {
    bool ok = false;
    if (current_worker && !current_worker->broken.empty())
        fail_broken(current_worker->broken);
    else
        ok = kind_ == Kind::Interpreter ? run_remote()
             : kind_ == Kind::Process   ? current_worker->process->run(*this)
                                        : run_local();
    // A callback's BaseException has nowhere to go on a worker (the stdlib's worker logs it).
    if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
    return ok;
}

bool Call::run_local() {
    Ref result = Ref::steal(PyObject_Call(fn_, args_, kwargs_));
    Py_CLEAR(fn_);
    Py_CLEAR(args_);
    Py_CLEAR(kwargs_);
    bool ok = static_cast<bool>(result);
    Ref value = ok ? std::move(result) : Ref::steal(PyErr_GetRaisedException());
    finish_local(nullptr, value.get(), !ok);
    return ok;
}

bool encode_value(PyObject *value, PyObject *dumps, std::string *out, Encoding *encoding) {
    PyTypeObject *type = Py_TYPE(value);
    Ref data;
    if (value == Py_None || type == &PyBool_Type || type == &PyLong_Type || type == &PyFloat_Type ||
        type == &PyComplex_Type || type == &PyUnicode_Type || type == &PyBytes_Type) {
        *encoding = Encoding::Marshal;
        data = Ref::steal(PyMarshal_WriteObjectToString(value, Py_MARSHAL_VERSION));
    } else {
        *encoding = Encoding::Pickle;
        Ref protocol = Ref::steal(PyLong_FromLong(5));
        data = protocol ? Ref::steal(PyObject_CallFunctionObjArgs(dumps, value, protocol.get(), nullptr))
                        : Ref();
    }
    char *bytes;
    Py_ssize_t size;
    if (!data || PyBytes_AsStringAndSize(data.get(), &bytes, &size) < 0) return false;
    out->assign(bytes, static_cast<size_t>(size));
    return true;
}

PyObject *decode_value(const std::string &data, Encoding encoding, PyObject *loads) {
    if (encoding == Encoding::Marshal)
        return PyMarshal_ReadObjectFromString(data.data(), static_cast<Py_ssize_t>(data.size()));
    // pickle reads straight from the C++ buffer: no copy into a bytes object
    Ref view = Ref::steal(PyMemoryView_FromMemory(const_cast<char *>(data.data()),
                                                  static_cast<Py_ssize_t>(data.size()), PyBUF_READ));
    return view ? PyObject_CallOneArg(loads, view.get()) : nullptr;
}

namespace {

// In the worker: the bytes that carry the current exception back (unirun._native does the
// formatting, the explaining, and the stand-in for exceptions that cannot be pickled).
bool exception_outcome(WorkerContext *worker, bool loading, std::string *out) {
    Ref exception = Ref::steal(PyErr_GetRaisedException());
    Ref data = Ref::steal(PyObject_CallMethod(worker->native, "exception_outcome", "OO",
                                              exception.get(), loading ? Py_True : Py_False));
    char *bytes;
    Py_ssize_t size;
    if (!data || PyBytes_AsStringAndSize(data.get(), &bytes, &size) < 0) return false;
    out->assign(bytes, static_cast<size_t>(size));
    return true;
}

}  // namespace

// In the worker: the function a marshalled code stands for, rebuilt on first sight (by
// unirun._native._function_from_code) and kept in the worker's own table; null on error.
Ref function_from_code(WorkerContext *worker, PyObject *code) {
    if (!PyBytes_Check(code)) return Ref();
    if (!worker->by_code && !(worker->by_code = PyDict_New())) return Ref();
    PyObject *known = nullptr;
    if (PyDict_GetItemRef(worker->by_code, code, &known) < 0) return Ref();
    if (known) return Ref::steal(known);
    Ref fn = Ref::steal(PyObject_CallMethod(worker->native, "_function_from_code", "(O)", code));
    if (!fn) return Ref();
    if (PyDict_GET_SIZE(worker->by_code) >= 1024) PyDict_Clear(worker->by_code);  // bounded
    if (PyDict_SetItem(worker->by_code, code, fn.get()) < 0) return Ref();
    return fn;
}

void adopt_worker_thread(WorkerContext *worker) {
    if (worker->thread_adopted || !worker->native) return;
    PyObject *modules = PyImport_GetModuleDict();  // borrowed
    PyObject *threading = nullptr;
    if (PyDict_GetItemStringRef(modules, "threading", &threading) <= 0) {
        PyErr_Clear();
        return;
    }
    Py_DECREF(threading);
    worker->thread_adopted = true;
    Ref done = Ref::steal(PyObject_CallMethod(worker->native, "adopt_worker_thread", "O", worker->name));
    if (!done) PyErr_WriteUnraisable(worker->native);
}

namespace {
constexpr Py_ssize_t kLargeResult = 1 << 16;  // as unirun._native.LARGE_BUFFER
}  // namespace

bool Call::run_remote() {
    // Attached to the worker's subinterpreter: only bytes cross.
    WorkerContext *worker = current_worker;
    bool ok = false, produced = false;
    std::string data;
    Encoding encoding = Encoding::Pickle;
    {
        Ref view = Ref::steal(PyMemoryView_FromMemory(payload_.data(),
                                                      static_cast<Py_ssize_t>(payload_.size()), PyBUF_READ));
        // Out-of-band buffers are read in place, in the owner's memory (kept by buffers_): the
        // reconstructors unirun._native gives them copy each once into this interpreter.
        Ref buffers = buffers_.empty() ? Ref() : Ref::steal(PyList_New(0));
        for (PyObject *owned : buffers_) {
            Py_buffer *raw = PyMemoryView_GET_BUFFER(owned);
            Ref in_place = buffers ? Ref::steal(PyMemoryView_FromMemory(static_cast<char *>(raw->buf), raw->len, PyBUF_READ))
                                   : Ref();
            if (!in_place || PyList_Append(buffers.get(), in_place.get()) < 0) {
                view = Ref();  // out of memory: reported as a failure to load the call
                break;
            }
        }
        Ref call;
        if (view && !buffers_.empty()) {
            // (A copy of the pickle, small beside its buffers: a load error's frames may keep it.)
            Ref copy = Ref::steal(PyBytes_FromStringAndSize(payload_.data(), static_cast<Py_ssize_t>(payload_.size())));
            Ref positional = copy ? Ref::steal(PyTuple_Pack(1, copy.get())) : Ref();
            Ref keywords = Ref::steal(Py_BuildValue("{sO}", "buffers", buffers.get()));
            Ref loads = Ref::steal(PyObject_GetAttrString(worker->native, "loads"));
            if (positional && keywords && loads)
                call = Ref::steal(PyObject_Call(loads.get(), positional.get(), keywords.get()));
        } else if (view) {
            call = Ref::steal(PyObject_CallOneArg(worker->loads, view.get()));
        }
        if (!call && view && buffers_.empty() && PyErr_ExceptionMatches(PyExc_Exception)) {
            // Perhaps it needs the program's __main__, which a worker loads only then. A copy of
            // the bytes (rare path): the error's frames may outlive payload_, the view may not.
            Ref error = Ref::steal(PyErr_GetRaisedException());
            Ref data = Ref::steal(PyBytes_FromStringAndSize(payload_.data(), static_cast<Py_ssize_t>(payload_.size())));
            if (data)
                call = Ref::steal(PyObject_CallMethod(worker->native, "loads_again", "OO", data.get(), error.get()));
        }
        view = Ref();
        std::string().swap(payload_);
        if (buffers) {
            // Nothing may go on using the owner's memory: release the views, then the owner's
            // objects, in the owner.
            PyObject *pending = PyErr_GetRaisedException();
            bool all_released = true;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(buffers.get()); ++i) {
                Ref released = Ref::steal(PyObject_CallMethod(PyList_GET_ITEM(buffers.get(), i), "release", nullptr));
                if (!released) {  // still exported: the owner's objects stay until the call ends
                    PyErr_WriteUnraisable(nullptr);
                    all_released = false;
                }
            }
            buffers = Ref();
            if (all_released) {
                SwitchTo home(worker->home);
                drop_payload();
            }
            PyErr_SetRaisedException(pending);
        }
        // (callable, args, kwargs), or (None, args, kwargs, marshalled code) for a function that
        // crosses by its code (rebuilt once per worker, see function_by_code in pool.cpp).
        Ref fn;
        if (call && PyTuple_Check(call.get()) && PyTuple_GET_SIZE(call.get()) == 4)
            fn = function_from_code(worker, PyTuple_GET_ITEM(call.get(), 3));
        else if (call && PyTuple_Check(call.get()) && PyTuple_GET_SIZE(call.get()) == 3)
            fn = Ref::steal(Py_NewRef(PyTuple_GET_ITEM(call.get(), 0)));
        if (!fn) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "malformed call");
            produced = exception_outcome(worker, true, &data);
        } else {
            adopt_worker_thread(worker);  // the call's module may have imported threading
            PyObject *kwargs = PyTuple_GET_ITEM(call.get(), 2);
            Ref result = Ref::steal(PyObject_Call(fn.get(), PyTuple_GET_ITEM(call.get(), 1),
                                                  kwargs == Py_None ? nullptr : kwargs));
            fn = Ref();
            call = Ref();
            if (!result) {
                produced = exception_outcome(worker, false, &data);
            } else if ((PyBytes_CheckExact(result.get()) && PyBytes_GET_SIZE(result.get()) >= kLargeResult) ||
                       (PyByteArray_CheckExact(result.get()) && PyByteArray_GET_SIZE(result.get()) >= kLargeResult)) {
                // A large bytes or bytearray result is copied once, straight into an object of
                // the owner (this thread switches there), not encoded and decoded.
                return finish_with_owner_copy(worker, result.get());
            } else if (encode_value(result.get(), worker->dumps, &data, &encoding)) {
                ok = produced = true;
            } else {
                Ref error = Ref::steal(PyErr_GetRaisedException());
                Ref fallback;  // pickle refused it: try the ways calls cross (functions by code...)
                if (error && PyErr_GivenExceptionMatches(error.get(), PyExc_Exception)) {
                    fallback = Ref::steal(PyObject_CallMethod(worker->native, "dumps_value", "(O)", result.get()));
                    if (!fallback) PyErr_Clear();  // the first error is the one to report
                }
                if (fallback && PyBytes_Check(fallback.get())) {
                    data.assign(PyBytes_AS_STRING(fallback.get()),
                                static_cast<size_t>(PyBytes_GET_SIZE(fallback.get())));
                    encoding = Encoding::Pickle;
                    ok = produced = true;
                } else {
                    Ref bytes = Ref::steal(PyObject_CallMethod(worker->native, "value_outcome_error",
                                                               "OO", result.get(), error.get()));
                    char *raw;
                    Py_ssize_t size;
                    if (bytes && PyBytes_AsStringAndSize(bytes.get(), &raw, &size) == 0) {
                        data.assign(raw, static_cast<size_t>(size));
                        produced = true;
                    }
                    encoding = Encoding::Pickle;
                }
            }
        }
    }
    if (!produced) {
        PyErr_Clear();  // even the error could not be encoded (out of memory, say)
        fail_broken("the interpreter worker could not send the task's outcome back");
        return false;
    }
    finish_remote(ok, std::move(data), encoding);
    return ok;
}

bool Call::finish_with_owner_copy(WorkerContext *worker, PyObject *result) {
    // The result is this interpreter's. Exported while the owner copies it, so no thread of
    // this interpreter can resize it meanwhile (bytes cannot change at all).
    const bool is_bytes = PyBytes_CheckExact(result);
    Py_buffer view;
    if (PyObject_GetBuffer(result, &view, PyBUF_SIMPLE) < 0) {
        std::string data;
        bool produced = exception_outcome(worker, false, &data);
        if (!produced) {
            PyErr_Clear();
            fail_broken("the interpreter worker could not send the task's outcome back");
            return false;
        }
        finish_remote(false, std::move(data), Encoding::Pickle);
        return false;
    }
    const char *memory = static_cast<const char *>(view.buf);
    Py_ssize_t size = view.len;
    bool ok;
    {
        SwitchTo home(worker->home);
        Ref copy = Ref::steal(is_bytes ? PyBytes_FromStringAndSize(memory, size)
                                       : PyByteArray_FromStringAndSize(memory, size));
        ok = static_cast<bool>(copy);
        Ref outcome = ok ? std::move(copy) : Ref::steal(PyErr_GetRaisedException());
        finish_local(nullptr, outcome.get(), !ok);
        if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);  // a callback's, in the owner
    }
    PyBuffer_Release(&view);
    return ok;
}

void Call::finish_remote(bool ok, std::string data, Encoding encoding) {
    Delivery delivery;
    delivery.kind = ok ? Outcome::RemoteValue : Outcome::RemoteException;
    delivery.data = std::move(data);
    delivery.encoding = encoding;
    change(ok ? Event::Result : Event::Exception, &delivery, nullptr);
}

void Call::fail_broken(const std::string &message) {
    Delivery delivery;
    delivery.kind = Outcome::Broken;
    delivery.data = message;
    change(Event::Exception, &delivery, nullptr);
}

void Call::notify_skipped() {
    // A call cancelled by shutdown has not announced its cancellation (callbacks) yet; one
    // cancelled through its future has. Either way the waiters learn of it now. (An error
    // left by the first step is kept through the second: deliver_observed stashes it.)
    change(Event::Cancel, nullptr, nullptr);
    change(Event::Cancelled, nullptr, nullptr);
}

void Call::skip() {
    notify_skipped();
    if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
}

bool Call::cancel(PyObject *future) { return change(Event::Cancel, nullptr, future) != Refused; }

Call::Commit Call::notify_cancelled(PyObject *future) {
    change(Event::Cancel, nullptr, future);  // announces a cancel made by shutdown, if not yet
    if (PyErr_Occurred()) return Refused;
    return change(Event::Cancelled, nullptr, future);
}

int Call::wait_done(double timeout_seconds) {
    using clock = std::chrono::steady_clock;
    // Beyond about 30 years a timeout is forever, and the deadline arithmetic stays in range.
    const bool forever = timeout_seconds < 0 || !(timeout_seconds < 1e9);
    const auto deadline =
        forever ? clock::time_point::max()
                : clock::now() + std::chrono::duration_cast<clock::duration>(
                                     std::chrono::duration<double>(timeout_seconds));
    // Slices, so that Ctrl-C reaches a main thread blocked in result() as it does in the stdlib.
    const auto slice = std::chrono::milliseconds(50);
    for (;;) {
        bool done;
        Py_BEGIN_ALLOW_THREADS;
        {  // the lock must be released before the thread re-attaches
            std::unique_lock lock(mutex_);
            auto until = std::min(deadline, clock::now() + slice);
            done = done_cv_.wait_until(lock, until, [this] { return done_locked(); });
        }
        Py_END_ALLOW_THREADS;
        if (done) return 1;
        if (PyErr_CheckSignals() < 0) return -1;
        if (!forever && clock::now() >= deadline) return 0;
    }
}

}  // namespace unirun::python
