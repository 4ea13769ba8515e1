// Owned Python references and thread-state switches as RAII objects.
#pragma once

#include "python/capi_compat.hpp"

#include <Python.h>

#include <utility>

namespace unirun::python {

class Ref {
   public:
    Ref() = default;
    static Ref steal(PyObject *object) { return Ref(object); }
    static Ref borrow(PyObject *object) {
        Py_XINCREF(object);
        return Ref(object);
    }
    Ref(const Ref &) = delete;
    Ref &operator=(const Ref &) = delete;
    Ref(Ref &&other) noexcept : object_(std::exchange(other.object_, nullptr)) {}
    Ref &operator=(Ref &&other) noexcept {
        if (this != &other) {
            Py_XDECREF(object_);
            object_ = std::exchange(other.object_, nullptr);
        }
        return *this;
    }
    ~Ref() { Py_XDECREF(object_); }

    PyObject *get() const { return object_; }
    PyObject *release() { return std::exchange(object_, nullptr); }
    PyObject *new_ref() const {
        Py_XINCREF(object_);
        return object_;
    }
    explicit operator bool() const { return object_ != nullptr; }

   private:
    explicit Ref(PyObject *object) : object_(object) {}
    PyObject *object_ = nullptr;
};

// Runs a scope attached to another thread state of this OS thread (e.g. from a subinterpreter
// worker back to the interpreter that owns the futures), then switches back.
class SwitchTo {
   public:
    explicit SwitchTo(PyThreadState *target) : target_(target) {
        previous_ = PyEval_SaveThread();
        PyEval_RestoreThread(target_);
    }
    ~SwitchTo() {
        PyEval_SaveThread();
        PyEval_RestoreThread(previous_);
    }
    SwitchTo(const SwitchTo &) = delete;
    SwitchTo &operator=(const SwitchTo &) = delete;

   private:
    PyThreadState *target_;
    PyThreadState *previous_;
};

}  // namespace unirun::python
