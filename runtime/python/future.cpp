#include "python/future.hpp"

#include <cmath>

#include "python/state.hpp"

#include <new>

namespace unirun::python {

namespace {

FutureObject *as_future(PyObject *self) { return reinterpret_cast<FutureObject *>(self); }

PyObject *future_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Future() takes no arguments");
        return nullptr;
    }
    return new_future(type, std::make_shared<Call>(Call::Kind::Manual, PyInterpreterState_Get()));
}

// concurrent.futures.Future.__init__ would assign the attributes this type computes.
int future_init(PyObject *, PyObject *, PyObject *) { return 0; }

int future_traverse(PyObject *self, visitproc visit, void *arg) {
    FutureObject *f = as_future(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(f->condition);
    Py_VISIT(f->waiters);
    Py_VISIT(f->callbacks);
    Py_VISIT(f->decoded);
    return unirun_visit_managed_dict(self, visit, arg);
}

int future_clear(PyObject *self) {
    FutureObject *f = as_future(self);
    Py_CLEAR(f->condition);
    Py_CLEAR(f->waiters);
    Py_CLEAR(f->callbacks);
    Py_CLEAR(f->decoded);
    unirun_clear_managed_dict(self);
    return 0;
}

void future_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyObject_ClearWeakRefs(self);
    future_clear(self);
    as_future(self)->call.~CallPtr();
    type->tp_free(self);
    Py_DECREF(type);
}

// A timeout as Condition.wait() takes it, which result() and exception() use: None waits
// forever, anything not above zero only looks, and more than the thread module can wait for
// is an OverflowError. *seconds < 0 means forever, 0 means look only.
bool parse_timeout(PyObject *timeout, double *seconds) {
    if (!timeout || timeout == Py_None) {
        *seconds = -1;
        return true;
    }
    double value = PyFloat_AsDouble(timeout);
    if (value == -1 && PyErr_Occurred()) return false;
#if PY_VERSION_HEX >= 0x030E0000
    // 3.14's Condition.wait passes NaN on to the lock, which rejects it; 3.13's only looks.
    if (std::isnan(value)) {
        PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
        return false;
    }
#endif
    if (!(value > 0)) {  // zero, negative (or NaN before 3.14)
        *seconds = 0;
        return true;
    }
    if (value * 1e6 > static_cast<double>(PY_TIMEOUT_MAX)) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return false;
    }
    *seconds = value;
    return true;
}

// The outcome of a finished call: a new reference; *is_exception tells which.
PyObject *outcome(FutureObject *self, bool *is_exception) {
    Call &call = *self->call;
    switch (call.outcome()) {
        case Call::Outcome::Value:
            *is_exception = false;
            return Py_NewRef(call.local_value());
        case Call::Outcome::Exception:
            *is_exception = true;
            return Py_NewRef(call.local_value());
        case Call::Outcome::None:
            PyErr_SetString(PyExc_RuntimeError, "unirun: future has no outcome");
            return nullptr;
        default:
            break;
    }
    PyObject *decoded_now = nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    decoded_now = Py_XNewRef(self->decoded);
    Py_END_CRITICAL_SECTION();
    if (!decoded_now) {
        // Decoding runs Python code (and may let other threads in): decode outside the lock,
        // then keep whichever decoded object was stored first. One future, one result object.
        Ref decoded;
        bool failed = false;
        if (call.outcome() == Call::Outcome::Broken) {
            Ref args = Ref::steal(Py_BuildValue("(s#O)", call.broken_message().data(),
                                                static_cast<Py_ssize_t>(call.broken_message().size()),
                                                call.kind() == Call::Kind::Process ? Py_True : Py_False));
            decoded = args ? call_native("broken_error", args.get()) : Ref();
            failed = true;
        } else if (call.outcome() == Call::Outcome::RemoteValue) {
            ModuleState *state = state_of(Py_TYPE(self));
            decoded = Ref::steal(decode_value(call.remote_data(), call.remote_encoding(),
                                              state->pickle_loads));
        } else {
            const std::string &data = call.remote_data();
            Ref args = Ref::steal(Py_BuildValue("(Oy#)", Py_False, data.data(),
                                                static_cast<Py_ssize_t>(data.size())));
            decoded = args ? call_native("loads_outcome", args.get()) : Ref();
            failed = true;
        }
        if (!decoded) {
            // A result that cannot be decoded here becomes the call's exception; an interrupt
            // while decoding (Ctrl-C) is the caller's, and the next reader decodes again.
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return nullptr;
            decoded = Ref::steal(PyErr_GetRaisedException());
            failed = true;
        }
        Py_BEGIN_CRITICAL_SECTION(self);
        if (!self->decoded) {
            self->decoded = decoded.release();
            self->decoded_is_exception = failed;
        }
        Py_END_CRITICAL_SECTION();
    } else {
        Py_DECREF(decoded_now);
    }
    PyObject *result = nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    result = Py_NewRef(self->decoded);
    *is_exception = self->decoded_is_exception;
    Py_END_CRITICAL_SECTION();
    return result;
}

PyObject *raise_cancelled(PyObject *self) {
    PyErr_SetNone(state_of(Py_TYPE(self))->cancelled_error);
    return nullptr;
}

// Shared by result() and exception(): wait, then hand back the outcome.
PyObject *wait_for_outcome(PyObject *self, PyObject *args, PyObject *kwargs, const char *name,
                           bool *is_exception) {
    static const char *keywords[] = {"timeout", nullptr};
    PyObject *timeout = nullptr;
    std::string format = std::string("|O:") + name;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format.c_str(), const_cast<char **>(keywords),
                                     &timeout))
        return nullptr;
    Call &call = *as_future(self)->call;
    if (!call.is_done()) {
        double seconds;
        if (!parse_timeout(timeout, &seconds)) return nullptr;
        int done = seconds == 0 ? call.is_done() : call.wait_done(seconds);
        if (done < 0) return nullptr;
        if (done == 0) {
            PyErr_SetNone(PyExc_TimeoutError);
            return nullptr;
        }
    }
    auto s = call.state();
    if (s == Call::Cancelled || s == Call::CancelledNotified) return raise_cancelled(self);
    return outcome(as_future(self), is_exception);
}

PyObject *future_result(PyObject *self, PyObject *args, PyObject *kwargs) {
    bool is_exception = false;
    PyObject *value = wait_for_outcome(self, args, kwargs, "result", &is_exception);
    if (value && is_exception) {
        // As `if self._exception is not None: raise self._exception`: set_exception() takes
        // any object (a false exception is still raised; None means no exception).
        if (value == Py_None) return value;  // the result of a future "failed" with None
        if (PyExceptionInstance_Check(value)) {
            PyErr_SetRaisedException(value);  // steals
        } else if (PyExceptionClass_Check(value)) {
            PyErr_SetNone(value);
            Py_DECREF(value);
        } else {
            Py_DECREF(value);
            PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
        }
        return nullptr;
    }
    return value;
}

PyObject *future_exception(PyObject *self, PyObject *args, PyObject *kwargs) {
    bool is_exception = false;
    PyObject *value = wait_for_outcome(self, args, kwargs, "exception", &is_exception);
    if (value && !is_exception) {
        Py_DECREF(value);
        Py_RETURN_NONE;
    }
    return value;
}

PyObject *future_cancel(PyObject *self, PyObject *) {
    bool cancelled = as_future(self)->call->cancel(self);
    if (PyErr_Occurred()) return nullptr;  // a callback or a signal handler raised
    return PyBool_FromLong(cancelled);
}

PyObject *future_cancelled(PyObject *self, PyObject *) {
    auto s = as_future(self)->call->state();
    return PyBool_FromLong(s == Call::Cancelled || s == Call::CancelledNotified);
}

PyObject *future_running(PyObject *self, PyObject *) {
    return PyBool_FromLong(as_future(self)->call->state() == Call::Running);
}

PyObject *future_done(PyObject *self, PyObject *) {
    return PyBool_FromLong(as_future(self)->call->is_done());
}

// Calls fn(future), logging an Exception as concurrent.futures does. A BaseException
// (KeyboardInterrupt in the main thread, say) stays raised: false, as the stdlib lets it out.
bool call_callback(PyObject *self, PyObject *fn) {
    Ref result = Ref::steal(PyObject_CallOneArg(fn, self));
    if (result) return true;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return false;
    Ref exception = Ref::steal(PyErr_GetRaisedException());
    Ref args = Ref::steal(Py_BuildValue("(OO)", self, exception.get()));
    if (!args || !call_native("log_callback_error", args.get())) PyErr_WriteUnraisable(fn);
    return true;
}

// Runs the done callbacks in order, the live list as the stdlib does; stops at a
// BaseException, left raised.
void invoke_callbacks(PyObject *self) {
    FutureObject *f = as_future(self);
    PyObject *callbacks = nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    callbacks = Py_XNewRef(f->callbacks);
    Py_END_CRITICAL_SECTION();
    if (!callbacks) return;
    for (Py_ssize_t i = 0;; ++i) {
        PyObject *fn = nullptr;
        Py_BEGIN_CRITICAL_SECTION(callbacks);
        if (i < PyList_GET_SIZE(callbacks)) fn = Py_NewRef(PyList_GET_ITEM(callbacks, i));
        Py_END_CRITICAL_SECTION();
        if (!fn) break;
        bool go_on = call_callback(self, fn);
        Py_DECREF(fn);
        if (!go_on) break;
    }
    Py_DECREF(callbacks);
}

// The list in `slot` (made on first use): a new reference.
PyObject *list_of(PyObject *self, PyObject *FutureObject::*slot) {
    FutureObject *f = as_future(self);
    PyObject *list = nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    list = Py_XNewRef(f->*slot);
    Py_END_CRITICAL_SECTION();
    if (list) return list;
    Ref made = Ref::steal(PyList_New(0));
    if (!made) return nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    if (!(f->*slot)) f->*slot = made.new_ref();
    list = Py_NewRef(f->*slot);
    Py_END_CRITICAL_SECTION();
    return list;
}

PyObject *future_add_done_callback(PyObject *self, PyObject *fn) {
    FutureObject *f = as_future(self);
    Ref callbacks = Ref::steal(list_of(self, &FutureObject::callbacks));
    if (!callbacks) return nullptr;
    int rc = 0;
    bool pending = f->call->observe(self, true, [&] { rc = PyList_Append(callbacks.get(), fn); });
    if (rc < 0) return nullptr;
    if (!pending && !call_callback(self, fn)) return nullptr;
    Py_RETURN_NONE;
}

PyObject *invalid_state(PyObject *self) {
    Ref repr = Ref::steal(PyObject_Repr(self));
    PyErr_Format(state_of(Py_TYPE(self))->invalid_state_error, "%S",
                 repr ? repr.get() : Py_None);
    return nullptr;
}

PyObject *finish(PyObject *self, PyObject *value, bool is_exception) {
    bool won = as_future(self)->call->finish_local(self, value, is_exception);
    if (PyErr_Occurred()) return nullptr;  // a callback or a signal handler raised
    if (!won) return invalid_state(self);
    Py_RETURN_NONE;
}

PyObject *future_set_result(PyObject *self, PyObject *value) { return finish(self, value, false); }

PyObject *future_set_exception(PyObject *self, PyObject *exception) {
    return finish(self, exception, true);
}

PyObject *future_set_running_or_notify_cancel(PyObject *self, PyObject *) {
    Call &call = *as_future(self)->call;
    if (call.try_start()) Py_RETURN_TRUE;
    auto s = call.state();
    if (s == Call::Cancelled) {
        Call::Commit result = call.notify_cancelled(self);
        if (PyErr_Occurred()) return nullptr;
        if (result == Call::Changed) Py_RETURN_FALSE;
        s = call.state();  // someone else notified first
    }
    Ref args = Ref::steal(Py_BuildValue("(OO)", self, state_of(Py_TYPE(self))->state_names[Call::futures_state_index(s)]));
    if (args && !call_native("log_unexpected_state", args.get())) PyErr_Clear();
    PyErr_SetString(PyExc_RuntimeError, "Future in unexpected state");
    return nullptr;
}

PyObject *get_state(PyObject *self, void *) {
    return Py_NewRef(
        state_of(Py_TYPE(self))->state_names[Call::futures_state_index(as_future(self)->call->state())]);
}

PyObject *get_outcome_part(PyObject *self, bool want_exception) {
    Call &call = *as_future(self)->call;
    if (call.state() != Call::Finished) Py_RETURN_NONE;
    bool is_exception;
    PyObject *value = outcome(as_future(self), &is_exception);
    if (value && is_exception != want_exception) {
        Py_DECREF(value);
        Py_RETURN_NONE;
    }
    return value;
}

// (done, cancelled, result, exception) from one reading of the state: what 3.15's asyncio asks
// of a concurrent future (Future._get_snapshot) when it copies its outcome. Native, so it neither
// takes nor creates the future's condition.
PyObject *future_get_snapshot(PyObject *self, PyObject *) {
    Call::State state = as_future(self)->call->state();
    switch (Call::futures_state_index(state)) {
        case 4: {
            bool is_exception;
            Ref value = Ref::steal(outcome(as_future(self), &is_exception));
            if (!value) return nullptr;
            return is_exception ? Py_BuildValue("OOOO", Py_True, Py_False, Py_None, value.get())
                                : Py_BuildValue("OOOO", Py_True, Py_False, value.get(), Py_None);
        }
        case 2:
        case 3:
            return Py_BuildValue("OOOO", Py_True, Py_True, Py_None, Py_None);
        default:
            return Py_BuildValue("OOOO", Py_False, Py_False, Py_None, Py_None);
    }
}

PyObject *get_result(PyObject *self, void *) { return get_outcome_part(self, false); }
PyObject *get_exception(PyObject *self, void *) { return get_outcome_part(self, true); }

// _waiters and _condition: made on demand; asking for them marks the future observed, since
// wait() and as_completed() register waiters through them.
PyObject *get_list(PyObject *self, PyObject *FutureObject::*slot) {
    PyObject *list = list_of(self, slot);
    if (list) as_future(self)->call->observe(self, false, [] {});
    return list;
}

PyObject *get_waiters(PyObject *self, void *) { return get_list(self, &FutureObject::waiters); }
PyObject *get_callbacks(PyObject *self, void *) { return get_list(self, &FutureObject::callbacks); }

// The future's condition, made on first use (a new reference).
PyObject *condition_of(FutureObject *f) {
    PyObject *condition = nullptr;
    Py_BEGIN_CRITICAL_SECTION(f);
    condition = Py_XNewRef(f->condition);
    Py_END_CRITICAL_SECTION();
    if (condition) return condition;
    Ref threading = Ref::steal(PyImport_ImportModule("threading"));
    Ref made = threading ? Ref::steal(PyObject_CallMethod(threading.get(), "Condition", nullptr)) : Ref();
    if (!made) return nullptr;
    Py_BEGIN_CRITICAL_SECTION(f);
    if (!f->condition) f->condition = made.new_ref();
    condition = Py_NewRef(f->condition);
    Py_END_CRITICAL_SECTION();
    return condition;
}

PyObject *get_condition(PyObject *self, void *) {
    PyObject *condition = condition_of(as_future(self));
    if (condition) as_future(self)->call->observe(self, false, [] {});
    return condition;
}

PyMethodDef future_methods[] = {
    {"cancel", future_cancel, METH_NOARGS, "Cancel the call if it has not started; True if cancelled."},
    {"cancelled", future_cancelled, METH_NOARGS, "True if the call was cancelled."},
    {"running", future_running, METH_NOARGS, "True if the call is running."},
    {"done", future_done, METH_NOARGS, "True if the call finished or was cancelled."},
    {"result", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(future_result)),
     METH_VARARGS | METH_KEYWORDS, "result(timeout=None): the call's value; raises its exception."},
    {"exception", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(future_exception)),
     METH_VARARGS | METH_KEYWORDS, "exception(timeout=None): the call's exception, or None."},
    {"add_done_callback", future_add_done_callback, METH_O,
     "Call fn(future) when the future is done (at once if it is)."},
    {"set_running_or_notify_cancel", future_set_running_or_notify_cancel, METH_NOARGS,
     "For executors: mark running, or report a cancellation."},
    {"set_result", future_set_result, METH_O, "For executors: finish with a value."},
    {"set_exception", future_set_exception, METH_O, "For executors: finish with an exception."},
    {"_get_snapshot", future_get_snapshot, METH_NOARGS,
     "(done, cancelled, result, exception), atomically (asyncio, 3.15+)."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef future_getset[] = {
    {"_state", get_state, nullptr, "concurrent.futures state name", nullptr},
    {"_result", get_result, nullptr, "the value, once finished", nullptr},
    {"_exception", get_exception, nullptr, "the exception, once finished", nullptr},
    {"_condition", get_condition, nullptr, "threading.Condition used by wait()", nullptr},
    {"_waiters", get_waiters, nullptr, "waiters registered by wait()/as_completed()", nullptr},
    {"_done_callbacks", get_callbacks, nullptr, "callbacks to run when done", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot future_slots[] = {
    {Py_tp_new, reinterpret_cast<void *>(future_new)},
    {Py_tp_init, reinterpret_cast<void *>(future_init)},
    {Py_tp_dealloc, reinterpret_cast<void *>(future_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void *>(future_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(future_clear)},
    {Py_tp_methods, future_methods},
    {Py_tp_getset, future_getset},
    {Py_tp_doc, const_cast<char *>("A concurrent.futures.Future completed by unirun's scheduler.")},
    {0, nullptr},
};

PyType_Spec future_spec = {
    "_unirun.Future",
    sizeof(FutureObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    future_slots,
};

}  // namespace

// The notification protocol of concurrent.futures.Future, in C: under the future's condition,
// commit the change (publishing its outcome if it wins), tell the waiters what happened
// (cancel() tells only the condition), notify the condition; then, outside it, run the done
// callbacks for a result, an exception or a cancel. Attached to the owner.
Call::Commit deliver_observed(PyObject *, Call &call, Call::Event event, Call::Delivery *delivery) {
    // An exception already set (a callback's Ctrl-C from the step before, say) must neither
    // leak into the Python calls below nor be lost: set aside, restored at the end, and it
    // wins over any raised here.
    Ref prior = Ref::steal(PyErr_GetRaisedException());
    Ref pending_error;  // the first interrupt raised here: kept for the caller
    auto keep_or_report = [&](PyObject *where) {
        if (!PyErr_Occurred()) return;
        if (!pending_error && !PyErr_ExceptionMatches(PyExc_Exception))
            pending_error = Ref::steal(PyErr_GetRaisedException());
        else
            PyErr_WriteUnraisable(where);
    };
    auto finish = [&](Call::Commit result) {
        if (prior) {
            if (pending_error) {
                PyErr_SetRaisedException(pending_error.release());
                PyErr_WriteUnraisable(nullptr);
            }
            PyErr_SetRaisedException(prior.release());
        } else if (pending_error) {
            PyErr_SetRaisedException(pending_error.release());
        }
        return result;
    };

    PyObject *release = nullptr;
    Ref future = Ref::steal(call.observed_future());
    if (!future) return finish(call.commit(event, delivery, &release));  // final: nothing to tell
    FutureObject *f = as_future(future.get());

    // The condition's acquire can be interrupted by a signal handler that raises (main thread):
    // keep that exception for the caller, and take the lock anyway, since the change must
    // happen. Without a condition at all (out of memory), change and tell waiters unlocked.
    Ref condition = Ref::steal(condition_of(f));
    if (!condition) keep_or_report(future.get());
    bool locked = false;
    for (int attempt = 0; condition && attempt < 100 && !locked; ++attempt) {
        Ref acquired = Ref::steal(PyObject_CallMethod(condition.get(), "acquire", nullptr));
        if (acquired)
            locked = true;
        else
            keep_or_report(condition.get());
    }

    Call::Commit result = call.commit(event, delivery, &release);
    if (result == Call::Changed && event != Call::Event::Cancel) {
        const char *method = event == Call::Event::Result      ? "add_result"
                             : event == Call::Event::Exception ? "add_exception"
                                                               : "add_cancelled";
        PyObject *waiters = nullptr;
        Py_BEGIN_CRITICAL_SECTION(f);
        waiters = f->waiters ? PyList_GetSlice(f->waiters, 0, PY_SSIZE_T_MAX) : nullptr;
        Py_END_CRITICAL_SECTION();
        if (waiters) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiters); ++i) {
                Ref told = Ref::steal(
                    PyObject_CallMethod(PyList_GET_ITEM(waiters, i), method, "O", future.get()));
                if (!told) keep_or_report(PyList_GET_ITEM(waiters, i));
            }
            Py_DECREF(waiters);
        } else {
            keep_or_report(future.get());
        }
    }
    if (locked) {
        if (result == Call::Changed) {
            Ref notified = Ref::steal(PyObject_CallMethod(condition.get(), "notify_all", nullptr));
            if (!notified) keep_or_report(condition.get());
        }
        Ref released = Ref::steal(PyObject_CallMethod(condition.get(), "release", nullptr));
        if (!released) keep_or_report(condition.get());
    }
    Py_XDECREF(release);  // the call's reference; `future` keeps it alive here
    if (result == Call::Changed && event != Call::Event::Cancelled) {
        // Callbacks run with no exception set; one that raises a BaseException stops them and
        // stays raised (as the stdlib's set_result lets it out), unless an interrupt is kept.
        Ref interrupt = std::move(pending_error);
        invoke_callbacks(future.get());
        if (interrupt) {
            if (PyErr_Occurred()) PyErr_WriteUnraisable(future.get());
            pending_error = std::move(interrupt);
        } else if (PyErr_Occurred()) {
            pending_error = Ref::steal(PyErr_GetRaisedException());
        }
    }
    return finish(result);
}

PyObject *make_future_type(PyObject *module) {
    Ref base_module = Ref::steal(PyImport_ImportModule("concurrent.futures._base"));
    Ref base = base_module ? Ref::steal(PyObject_GetAttrString(base_module.get(), "Future")) : Ref();
    if (!base) return nullptr;
    // This type's fields follow the base's: it must be a plain class whose instance layout is
    // a header (and before 3.12 one weak reference slot), as concurrent.futures.Future is.
    if (!PyType_Check(base.get())) {
        PyErr_SetString(PyExc_TypeError, "concurrent.futures.Future is not a class");
        return nullptr;
    }
    Py_ssize_t base_size = reinterpret_cast<PyTypeObject *>(base.get())->tp_basicsize;
    if (base_size != static_cast<Py_ssize_t>(offsetof(FutureObject, call))) {
        PyErr_Format(PyExc_SystemError,
                     "concurrent.futures.Future's instance layout (%zd bytes) is not the one "
                     "_unirun.Future extends (%zd bytes)",
                     base_size, static_cast<Py_ssize_t>(offsetof(FutureObject, call)));
        return nullptr;
    }
    return PyType_FromModuleAndSpec(module, &future_spec, base.get());
}

PyObject *new_future(PyTypeObject *type, CallPtr call) {
    PyObject *self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    FutureObject *f = as_future(self);
    new (&f->call) CallPtr(std::move(call));
    f->condition = f->waiters = f->callbacks = f->decoded = nullptr;
    f->decoded_is_exception = false;
    return self;
}

}  // namespace unirun::python
