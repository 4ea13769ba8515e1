#include "python/call.hpp"

#include <marshal.h>

#include <cmath>

namespace unirun::python {

thread_local WorkerContext *current_worker = nullptr;

namespace {

const char *event_name(Call::Event event) {
    switch (event) {
        case Call::Event::Result: return "result";
        case Call::Event::Exception: return "exception";
        case Call::Event::Cancel: return "cancel";
        case Call::Event::Cancelled: break;
    }
    return "cancelled";
}

}  // namespace

Ref call_native(const char *name, PyObject *args) {
    Ref module = Ref::steal(PyImport_ImportModule("unirun._native"));
    if (!module) return {};
    Ref function = Ref::steal(PyObject_GetAttrString(module.get(), name));
    if (!function) return {};
    return Ref::steal(PyObject_CallObject(function.get(), args));
}

Call::~Call() {
    // Only thread-kind and manual calls hold Python objects, and those are released attached
    // to the owner (see call.hpp). future_ is always released by the final state change.
    Py_XDECREF(fn_);
    Py_XDECREF(args_);
    Py_XDECREF(kwargs_);
    Py_XDECREF(value_);
}

void Call::set_call(PyObject *fn, PyObject *args, PyObject *kwargs) {
    fn_ = Py_NewRef(fn);
    args_ = Py_NewRef(args);
    kwargs_ = Py_XNewRef(kwargs);
}

bool Call::is_done() const {
    std::lock_guard lock(mutex_);
    return done_locked();
}

Call::Commit Call::commit_locked(Event event, PyObject **release) {
    switch (event) {
        case Event::Result:
        case Event::Exception:
            if (!transition(Pending, Finished) && !transition(Running, Finished)) return Refused;
            break;
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

Call::Commit Call::commit_from_python(Event event) {
    PyObject *release = nullptr;
    Commit result;
    {
        std::lock_guard lock(mutex_);
        result = commit_locked(event, &release);
    }
    if (result == Changed) done_cv_.notify_all();
    Py_XDECREF(release);  // the caller (_complete) holds its own reference
    return result;
}

Call::Commit Call::change(Event event, PyObject *future_hint) {
    if (event == Event::Result || event == Event::Exception) scheduler::note_task_finishing(this);
    PyObject *future;
    {
        std::lock_guard lock(mutex_);
        if (!observed_) {
            PyObject *release = nullptr;
            Commit result = commit_locked(event, &release);
            if (result == Changed) done_cv_.notify_all();
            return result;
        }
        future = Py_NewRef(future_ ? future_ : future_hint);
    }
    Commit result;
    if (current_worker && current_worker->in_subinterpreter) {
        SwitchTo owner(current_worker->home);
        result = change_observed(event, future);
        Py_DECREF(future);
    } else {
        result = change_observed(event, future);
        Py_DECREF(future);
    }
    return result;
}

// Attached to the owner: unirun._native._complete takes the future's condition, commits, and
// notifies waiters and callbacks exactly as concurrent.futures.Future does.
Call::Commit Call::change_observed(Event event, PyObject *future) {
    Ref args = Ref::steal(Py_BuildValue("(Os)", future, event_name(event)));
    Ref result = args ? call_native("_complete", args.get()) : Ref();
    if (result) {
        long value = PyLong_AsLong(result.get());
        if (value >= 0) return static_cast<Commit>(value);
    }
    // The notification failed (out of memory, say): the state change itself must not be lost.
    PyErr_WriteUnraisable(future);
    return commit_from_python(event);
}

bool Call::finish_local(PyObject *future, PyObject *value, bool is_exception) {
    {
        std::lock_guard lock(mutex_);
        if (done_locked()) return false;
        outcome_ = is_exception ? Outcome::Exception : Outcome::Value;
        Py_XSETREF(value_, Py_NewRef(value));
    }
    return change(is_exception ? Event::Exception : Event::Result, future) == Changed;
}

bool Call::run() {
    if (current_worker && !current_worker->broken.empty()) {
        fail_broken(current_worker->broken);
        return false;
    }
    return kind_ == Kind::Interpreter ? run_remote() : run_local();
}

bool Call::run_local() {
    Ref result = Ref::steal(PyObject_Call(fn_, args_, kwargs_));
    Py_CLEAR(fn_);
    Py_CLEAR(args_);
    Py_CLEAR(kwargs_);
    if (!result) {
        Ref exception = Ref::steal(PyErr_GetRaisedException());
        finish_local(nullptr, exception.get(), true);
        return false;
    }
    finish_local(nullptr, result.get(), false);
    return true;
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

bool Call::run_remote() {
    // Attached to the worker's subinterpreter: only bytes cross.
    WorkerContext *worker = current_worker;
    bool ok = false, produced = false;
    std::string data;
    Encoding encoding = Encoding::Pickle;
    {
        Ref view = Ref::steal(PyMemoryView_FromMemory(payload_.data(),
                                                      static_cast<Py_ssize_t>(payload_.size()), PyBUF_READ));
        Ref call = view ? Ref::steal(PyObject_CallOneArg(worker->loads, view.get())) : Ref();
        view = Ref();
        std::string().swap(payload_);
        if (!call || !PyTuple_Check(call.get()) || PyTuple_GET_SIZE(call.get()) != 3) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "malformed call");
            produced = exception_outcome(worker, true, &data);
        } else {
            adopt_worker_thread(worker);  // the call's module may have imported threading
            PyObject *kwargs = PyTuple_GET_ITEM(call.get(), 2);
            Ref result = Ref::steal(PyObject_Call(PyTuple_GET_ITEM(call.get(), 0),
                                                  PyTuple_GET_ITEM(call.get(), 1),
                                                  kwargs == Py_None ? nullptr : kwargs));
            call = Ref();
            if (!result) {
                produced = exception_outcome(worker, false, &data);
            } else if (encode_value(result.get(), worker->dumps, &data, &encoding)) {
                ok = produced = true;
            } else {
                Ref error = Ref::steal(PyErr_GetRaisedException());
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
    if (!produced) {
        PyErr_Clear();  // even the error could not be encoded (out of memory, say)
        fail_broken("the interpreter worker could not send the task's outcome back");
        return false;
    }
    {
        std::lock_guard lock(mutex_);
        outcome_ = ok ? Outcome::RemoteValue : Outcome::RemoteException;
        remote_ = std::move(data);
        encoding_ = encoding;
    }
    change(ok ? Event::Result : Event::Exception, nullptr);
    return ok;
}

void Call::fail_broken(const std::string &message) {
    {
        std::lock_guard lock(mutex_);
        if (done_locked()) return;
        outcome_ = Outcome::Broken;
        remote_ = message;
    }
    change(Event::Exception, nullptr);
}

void Call::skip() {
    // A call cancelled by shutdown has not announced its cancellation (callbacks) yet; one
    // cancelled through its future has. Either way the waiters learn of it now.
    change(Event::Cancel, nullptr);
    change(Event::Cancelled, nullptr);
}

bool Call::cancel(PyObject *future) {
    auto result = change(Event::Cancel, future);
    return result != Refused;
}

int Call::wait_done(double timeout_seconds) {
    using clock = std::chrono::steady_clock;
    const bool forever = timeout_seconds < 0 || std::isinf(timeout_seconds);
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
