#include "python/future.hpp"

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
    return new_future(type, std::make_shared<Call>(Call::Kind::Manual));
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
    return PyObject_VisitManagedDict(self, visit, arg);
}

int future_clear(PyObject *self) {
    FutureObject *f = as_future(self);
    Py_CLEAR(f->condition);
    Py_CLEAR(f->waiters);
    Py_CLEAR(f->callbacks);
    Py_CLEAR(f->decoded);
    PyObject_ClearManagedDict(self);
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

bool parse_timeout(PyObject *timeout, double *seconds) {
    if (!timeout || timeout == Py_None) {
        *seconds = -1;
        return true;
    }
    *seconds = PyFloat_AsDouble(timeout);
    if (*seconds == -1 && PyErr_Occurred()) return false;
    if (*seconds < 0) *seconds = 0;
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
    PyObject *result = nullptr;
    Py_BEGIN_CRITICAL_SECTION(self);
    if (!self->decoded) {
        Ref decoded;
        bool failed = false;
        if (call.outcome() == Call::Outcome::Broken) {
            Ref args = Ref::steal(Py_BuildValue("(s)", call.broken_message().c_str()));
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
        if (!decoded) {  // a result that cannot be decoded here becomes the call's exception
            decoded = Ref::steal(PyErr_GetRaisedException());
            failed = true;
        }
        self->decoded = decoded.release();
        self->decoded_is_exception = failed;
    }
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
    double seconds;
    if (!parse_timeout(timeout, &seconds)) return nullptr;
    Call &call = *as_future(self)->call;
    if (!call.is_done()) {
        int done = call.wait_done(seconds);
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
        PyErr_SetRaisedException(value);  // steals
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
    return PyBool_FromLong(as_future(self)->call->cancel(self));
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

// Calls fn(future), logging an exception as concurrent.futures does.
void call_callback(PyObject *self, PyObject *fn) {
    Ref result = Ref::steal(PyObject_CallOneArg(fn, self));
    if (result) return;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_WriteUnraisable(fn);  // BaseException from a callback: not ours to swallow silently
        return;
    }
    Ref exception = Ref::steal(PyErr_GetRaisedException());
    Ref args = Ref::steal(Py_BuildValue("(OO)", self, exception.get()));
    if (!args || !call_native("log_callback_error", args.get())) PyErr_WriteUnraisable(fn);
}

PyObject *future_add_done_callback(PyObject *self, PyObject *fn) {
    FutureObject *f = as_future(self);
    if (!f->callbacks) {
        PyObject *list = PyList_New(0);
        if (!list) return nullptr;
        Py_BEGIN_CRITICAL_SECTION(self);
        if (!f->callbacks) f->callbacks = Py_NewRef(list);
        Py_END_CRITICAL_SECTION();
        Py_DECREF(list);
    }
    int rc = 0;
    bool pending = f->call->observe(self, [&] { rc = PyList_Append(f->callbacks, fn); });
    if (rc < 0) return nullptr;
    if (!pending) call_callback(self, fn);
    Py_RETURN_NONE;
}

PyObject *invalid_state(PyObject *self) {
    Ref repr = Ref::steal(PyObject_Repr(self));
    PyErr_Format(state_of(Py_TYPE(self))->invalid_state_error, "%S",
                 repr ? repr.get() : Py_None);
    return nullptr;
}

PyObject *future_set_result(PyObject *self, PyObject *value) {
    if (!as_future(self)->call->finish_local(self, value, false)) return invalid_state(self);
    Py_RETURN_NONE;
}

PyObject *future_set_exception(PyObject *self, PyObject *exception) {
    if (!as_future(self)->call->finish_local(self, exception, true)) return invalid_state(self);
    Py_RETURN_NONE;
}

PyObject *future_set_running_or_notify_cancel(PyObject *self, PyObject *) {
    Call &call = *as_future(self)->call;
    if (call.try_start()) Py_RETURN_TRUE;
    if (call.state() == Call::Cancelled) {
        call.skip();
        Py_RETURN_FALSE;
    }
    PyErr_Format(PyExc_RuntimeError, "Future in unexpected state");
    return nullptr;
}

// _unirun_commit(event): the state change for event, called by unirun._native._complete while
// it holds the future's condition. Returns 0 refused, 1 changed, 2 already so.
PyObject *future_commit(PyObject *self, PyObject *event) {
    const char *name = PyUnicode_AsUTF8(event);
    if (!name) return nullptr;
    std::string_view e(name);
    Call::Event which;
    if (e == "result") which = Call::Event::Result;
    else if (e == "exception") which = Call::Event::Exception;
    else if (e == "cancel") which = Call::Event::Cancel;
    else if (e == "cancelled") which = Call::Event::Cancelled;
    else {
        PyErr_Format(PyExc_ValueError, "unknown event %R", event);
        return nullptr;
    }
    return PyLong_FromLong(as_future(self)->call->commit_from_python(which));
}

PyObject *get_state(PyObject *self, void *) {
    return Py_NewRef(state_of(Py_TYPE(self))->state_names[as_future(self)->call->state()]);
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

PyObject *get_result(PyObject *self, void *) { return get_outcome_part(self, false); }
PyObject *get_exception(PyObject *self, void *) { return get_outcome_part(self, true); }

// _waiters and _condition: made on demand; asking for them marks the future observed, since
// wait() and as_completed() register waiters through them.
PyObject *get_list(PyObject *self, PyObject *FutureObject::*slot) {
    FutureObject *f = as_future(self);
    if (!(f->*slot)) {
        PyObject *list = PyList_New(0);
        if (!list) return nullptr;
        Py_BEGIN_CRITICAL_SECTION(self);
        if (!(f->*slot)) f->*slot = Py_NewRef(list);
        Py_END_CRITICAL_SECTION();
        Py_DECREF(list);
    }
    f->call->observe(self, [] {});
    return Py_NewRef(f->*slot);
}

PyObject *get_waiters(PyObject *self, void *) { return get_list(self, &FutureObject::waiters); }
PyObject *get_callbacks(PyObject *self, void *) { return get_list(self, &FutureObject::callbacks); }

PyObject *get_condition(PyObject *self, void *) {
    FutureObject *f = as_future(self);
    if (!f->condition) {
        Ref threading = Ref::steal(PyImport_ImportModule("threading"));
        Ref condition = threading ? Ref::steal(PyObject_CallMethod(threading.get(), "Condition", nullptr))
                                  : Ref();
        if (!condition) return nullptr;
        Py_BEGIN_CRITICAL_SECTION(self);
        if (!f->condition) f->condition = condition.new_ref();
        Py_END_CRITICAL_SECTION();
    }
    f->call->observe(self, [] {});
    return Py_NewRef(f->condition);
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
    {"_unirun_commit", future_commit, METH_O, "internal: commit a state change (see _native)"},
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

PyObject *make_future_type(PyObject *module) {
    Ref base_module = Ref::steal(PyImport_ImportModule("concurrent.futures._base"));
    Ref base = base_module ? Ref::steal(PyObject_GetAttrString(base_module.get(), "Future")) : Ref();
    if (!base) return nullptr;
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
