#include "python/call.hpp"

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

Call::~Call() {
    // Only thread-kind and manual calls hold Python objects, and those are released attached
    // to the owner (see call.hpp). future_ is always consumed by the final notification.
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

PyObject *Call::complete_locked(State final_state) {
    set_state(final_state);
    PyObject *future = nullptr;
    if (observed_) future = std::exchange(future_, nullptr);
    return future;
}

// Runs unirun._native._notify(future, event) attached to the owner interpreter.
void Call::notify(PyObject *future, const char *event, bool consume) {
    if (!future) return;
    Ref args = Ref::steal(Py_BuildValue("(Os)", future, event));
    Ref result = args ? call_native("_notify", args.get()) : Ref();
    if (!result) PyErr_WriteUnraisable(future);
    if (consume) Py_DECREF(future);
}

bool Call::finish_local(PyObject *value, bool is_exception) {
    PyObject *future;
    {
        std::lock_guard lock(mutex_);
        if (done_locked()) return false;
        outcome_ = is_exception ? Outcome::Exception : Outcome::Value;
        value_ = Py_NewRef(value);
        future = complete_locked(Finished);
    }
    done_cv_.notify_all();
    notify(future, is_exception ? "exception" : "result", true);
    return true;
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
        finish_local(exception.get(), true);
        return false;
    }
    finish_local(result.get(), false);
    return true;
}

bool Call::run_remote() {
    // Attached to the worker's subinterpreter: only bytes cross.
    WorkerContext *worker = current_worker;
    Ref payload = Ref::steal(PyBytes_FromStringAndSize(payload_.data(), payload_.size()));
    std::string().swap(payload_);
    Ref out = payload ? Ref::steal(PyObject_CallOneArg(worker->run_call, payload.get())) : Ref();
    bool ok = false;
    std::string data;
    if (out && PyTuple_Check(out.get()) && PyTuple_GET_SIZE(out.get()) == 2 &&
        PyBytes_Check(PyTuple_GET_ITEM(out.get(), 1))) {
        ok = PyObject_IsTrue(PyTuple_GET_ITEM(out.get(), 0));
        PyObject *bytes = PyTuple_GET_ITEM(out.get(), 1);
        data.assign(PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
    } else {
        // run_call itself failed (out of memory, say): report it as a broken worker
        PyErr_Clear();
        fail_broken("the interpreter worker failed while running the task");
        return false;
    }
    out = Ref();
    payload = Ref();
    PyObject *future;
    {
        std::lock_guard lock(mutex_);
        outcome_ = ok ? Outcome::RemoteValue : Outcome::RemoteException;
        remote_ = std::move(data);
        future = complete_locked(Finished);
    }
    done_cv_.notify_all();
    if (future) {
        SwitchTo owner(worker->home);
        notify(future, ok ? "result" : "exception", true);
    }
    return ok;
}

void Call::fail_broken(const std::string &message) {
    PyObject *future;
    {
        std::lock_guard lock(mutex_);
        if (done_locked()) return;
        outcome_ = Outcome::Broken;
        remote_ = message;
        future = complete_locked(Finished);
    }
    done_cv_.notify_all();
    if (!future) return;
    if (current_worker && current_worker->in_subinterpreter) {
        SwitchTo owner(current_worker->home);
        notify(future, "exception", true);
    } else {
        notify(future, "exception", true);
    }
}

void Call::skip() {
    PyObject *future;
    bool announce;
    {
        std::lock_guard lock(mutex_);
        if (state() != Cancelled) return;
        announce = !cancel_announced_;
        cancel_announced_ = true;
        future = complete_locked(CancelledNotified);
    }
    done_cv_.notify_all();
    if (!future) return;
    auto deliver = [&] {
        if (announce) notify(future, "cancel", false);
        notify(future, "cancelled", true);
    };
    if (current_worker && current_worker->in_subinterpreter) {
        SwitchTo owner(current_worker->home);
        deliver();
    } else {
        deliver();
    }
}

bool Call::cancel(PyObject *future) {
    bool observed;
    {
        std::lock_guard lock(mutex_);
        auto s = state();
        if (s == Cancelled || s == CancelledNotified) return true;
        if (s != Pending || !try_cancel()) return false;
        cancel_announced_ = true;
        observed = observed_;
    }
    done_cv_.notify_all();
    if (observed) notify(future, "cancel", false);
    return true;
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
