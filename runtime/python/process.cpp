#include "python/process.hpp"

#include "python/pool.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <new>

namespace unirun::python {

namespace {

constexpr size_t kHeaderSize = 13;  // tag, u32 buffer count, u64 payload length
constexpr size_t kReadAhead = 1 << 16;
// A buffer's length word: the length, and this bit when the buffer is writable (so the other
// side gives it to pickle as a bytearray, not bytes: a NumPy array stays writable).
constexpr uint64_t kWritable = uint64_t{1} << 63;
// Beyond these a header is garbage (a task that wrote to the pipe itself): the child is ended.
constexpr uint64_t kMostPayload = uint64_t{1} << 40;
constexpr uint64_t kMostBuffers = 1 << 20;

void put_u32(char *at, uint32_t value) {
    for (int i = 0; i < 4; ++i) at[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
void put_u64(char *at, uint64_t value) {
    for (int i = 0; i < 8; ++i) at[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
uint64_t get_u(const char *at, int bytes) {
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(at[i]);
    return value;
}

// An int from a tuple item, or -1 with an exception set.
int int_item(PyObject *tuple, Py_ssize_t index) {
    long value = PyLong_AsLong(PyTuple_GET_ITEM(tuple, index));
    if (value < 0 || value > INT32_MAX) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return -1;
    }
    return static_cast<int>(value);
}

}  // namespace

void block_sigpipe_on_this_thread() {
    // A write to a child that died is EPIPE here, never a SIGPIPE that ends the program (whose
    // disposition the program may have set back to the default).
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
}

ProcessChild::~ProcessChild() {
    close_pipes();
    Py_XDECREF(process_);  // stop() reaped it; only an abandoned start leaves one here
}

void ProcessChild::close_pipes() {
    if (to_child_ >= 0) close(to_child_);
    if (from_child_ >= 0) close(from_child_);
    to_child_ = from_child_ = -1;
    sentinel_ = -1;
    in_begin_ = in_end_ = 0;
}

bool ProcessChild::start(std::string *broken) {
    tasks_ = 0;
    initializer_failed_ = false;
    Ref args = Ref::steal(PyTuple_Pack(1, pool_));
    Ref started = args ? call_native("start_process_child", args.get()) : Ref();
    bool ok = started && PyTuple_Check(started.get()) && PyTuple_GET_SIZE(started.get()) == 4;
    int to = ok ? int_item(started.get(), 1) : -1, from = ok ? int_item(started.get(), 2) : -1;
    int sentinel = ok ? int_item(started.get(), 3) : -1;
    if (!ok || to < 0 || from < 0 || sentinel < 0) {
        if (ok) {  // a child whose pipes we cannot use: end it
            Ref killed = Ref::steal(PyObject_CallMethod(PyTuple_GET_ITEM(started.get(), 0), "kill", nullptr));
            PyErr_Clear();
        }
        Ref error = Ref::steal(PyErr_GetRaisedException());
        *broken = error ? report_start_error(pool_, error.get())
                        : report_start_message(pool_, "cannot start a worker process");
        initializer_failed_ = true;  // no child to replace: every task of this worker fails
        return false;
    }
    process_ = Py_NewRef(PyTuple_GET_ITEM(started.get(), 0));
    to_child_ = to;
    from_child_ = from;
    sentinel_ = sentinel;  // the Process's own: valid while process_ is held
    // Writes wait in poll() beside the sentinel: a dead child whose pipe someone else still
    // holds open (a process forked here later) must not block a write forever.
    int flags = fcntl(to_child_, F_GETFL);
    if (flags >= 0) fcntl(to_child_, F_SETFL, flags | O_NONBLOCK);
    ready_ = false;
    return true;
}

bool ProcessChild::await_ready(std::string *broken) {
    // 'R' (ready) or 'F' (its initializer failed: the exception outcome) once it has started.
    char tag = 0;
    std::vector<uint64_t> lengths;
    std::string reply;
    Io io;
    Py_BEGIN_ALLOW_THREADS;
    io = read_frame(&tag, &lengths, &reply);
    Py_END_ALLOW_THREADS;
    if (io == Io::Ok && lengths.empty() && tag == 'R') {
        ready_ = true;
        return true;
    }
    if (io == Io::Ok && lengths.empty() && tag == 'F') {
        stop();  // it leaves after reporting
        *broken = report_start_failure(pool_, reply);
        initializer_failed_ = true;
        return false;
    }
    // It died before it could answer, or spoke nonsense (then it is ended): a death like any
    // other (compat's pool breaks; unirun's executor starts a new child for the next task).
    if (io != Io::Closed) kill();
    *broken = died(false);
    return false;
}

void ProcessChild::kill() {
    if (!process_) return;
    Ref killed = Ref::steal(PyObject_CallMethod(process_, "kill", nullptr));
    if (!killed) PyErr_Clear();
}

void ProcessChild::stop() {
    if (!process_) return;
    // Asked to leave by a frame, not only by end-of-file: a process forked here meanwhile may
    // hold a copy of our end of its pipe.
    if (to_child_ >= 0 && ready_) {
        Py_BEGIN_ALLOW_THREADS;
        write_frame('Q', std::string(), {});
        Py_END_ALLOW_THREADS;
    }
    if (to_child_ >= 0) close(to_child_);  // end-of-file too
    to_child_ = -1;
    Ref process = Ref::steal(process_);
    process_ = nullptr;
    Ref args = Ref::steal(PyTuple_Pack(2, pool_, process.get()));
    Ref reaped = args ? call_native("reap_process_child", args.get()) : Ref();
    if (!reaped) PyErr_WriteUnraisable(process.get());
    close_pipes();
}

std::string ProcessChild::died(bool during_task, PyObject *cause) {
    close_pipes();
    Ref process = Ref::steal(process_);
    process_ = nullptr;
    Ref args = Ref::steal(PyTuple_Pack(4, pool_, process.get(), during_task ? Py_True : Py_False,
                                       cause ? cause : Py_None));
    Ref message = args ? call_native("process_child_died", args.get()) : Ref();
    Py_ssize_t length = 0;
    const char *text = message ? PyUnicode_AsUTF8AndSize(message.get(), &length) : nullptr;
    if (!text) {
        PyErr_WriteUnraisable(pool_);
        return "A process in the process pool was terminated abruptly while the future was "
               "running or pending.";
    }
    return std::string(text, static_cast<size_t>(length));
}

ProcessChild::Io ProcessChild::wait_for(int fd, short events) {
    for (;;) {
        pollfd fds[2] = {{fd, events, 0}, {sentinel_, POLLIN, 0}};
        int n = poll(fds, sentinel_ >= 0 ? 2 : 1, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Io::Error;
        }
        if (fds[0].revents) return Io::Ok;  // ready, or hung up / failed: the call itself tells
        if (fds[1].revents) {
            // The child has ended. What it wrote before is still in the pipe: take that first.
            pollfd last = {fd, events, 0};
            return poll(&last, 1, 0) > 0 ? Io::Ok : Io::Closed;
        }
    }
}

ProcessChild::Io ProcessChild::write_frame(char tag, const std::string &payload,
                                           const std::vector<Py_buffer *> &buffers) {
    std::string head(kHeaderSize + 8 * buffers.size(), '\0');
    head[0] = tag;
    put_u32(head.data() + 1, static_cast<uint32_t>(buffers.size()));
    put_u64(head.data() + 5, payload.size());
    for (size_t i = 0; i < buffers.size(); ++i)
        put_u64(head.data() + kHeaderSize + 8 * i,
                static_cast<uint64_t>(buffers[i]->len) | (buffers[i]->readonly ? 0 : kWritable));
    std::vector<iovec> parts;
    parts.push_back({head.data(), head.size()});
    if (!payload.empty()) parts.push_back({const_cast<char *>(payload.data()), payload.size()});
    for (Py_buffer *buffer : buffers)
        if (buffer->len) parts.push_back({buffer->buf, static_cast<size_t>(buffer->len)});
    size_t first = 0;
    while (first < parts.size()) {
        ssize_t written = writev(to_child_, parts.data() + first,
                                 static_cast<int>(std::min<size_t>(parts.size() - first, IOV_MAX)));
        if (written < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                Io io = wait_for(to_child_, POLLOUT);
                if (io != Io::Ok) return io;
                continue;
            }
            return errno == EPIPE ? Io::Closed : Io::Error;
        }
        size_t left = static_cast<size_t>(written);
        while (first < parts.size() && left >= parts[first].iov_len) left -= parts[first++].iov_len;
        if (left) {
            parts[first].iov_base = static_cast<char *>(parts[first].iov_base) + left;
            parts[first].iov_len -= left;
        }
    }
    return Io::Ok;
}

ProcessChild::Io ProcessChild::read_exactly(char *into, size_t size) {
    size_t buffered = in_end_ - in_begin_;
    size_t taken = std::min(buffered, size);
    if (taken) {
        std::memcpy(into, in_.data() + in_begin_, taken);
        in_begin_ += taken;
        into += taken;
        size -= taken;
    }
    while (size) {
        Io ready = wait_for(from_child_, POLLIN);
        if (ready != Io::Ok) return ready;
        ssize_t got;
        if (size >= kReadAhead) {  // large: straight into place
            got = read(from_child_, into, size);
            if (got > 0) {
                into += got;
                size -= static_cast<size_t>(got);
                continue;
            }
        } else {
            got = read(from_child_, in_.data(), in_.size());
            if (got > 0) {
                in_begin_ = 0;
                in_end_ = static_cast<size_t>(got);
                size_t now = std::min(in_end_, size);
                std::memcpy(into, in_.data(), now);
                in_begin_ = now;
                into += now;
                size -= now;
                continue;
            }
        }
        if (got == 0) return Io::Closed;
        if (errno == EINTR || errno == EAGAIN) continue;
        return Io::Error;
    }
    return Io::Ok;
}

ProcessChild::Io ProcessChild::read_header(char *tag, std::vector<uint64_t> *lengths,
                                           uint64_t *payload_size) {
    char head[kHeaderSize];
    Io io = read_exactly(head, kHeaderSize);
    if (io != Io::Ok) return io;
    *tag = head[0];
    uint64_t count = get_u(head + 1, 4);
    *payload_size = get_u(head + 5, 8);
    if (count > kMostBuffers || *payload_size > kMostPayload) return Io::Error;
    lengths->resize(count);
    for (auto &length : *lengths) {
        char raw[8];
        if ((io = read_exactly(raw, 8)) != Io::Ok) return io;
        length = get_u(raw, 8);
        if ((length & ~kWritable) > static_cast<uint64_t>(PY_SSIZE_T_MAX)) return Io::Error;
    }
    return Io::Ok;
}

ProcessChild::Io ProcessChild::read_frame(char *tag, std::vector<uint64_t> *lengths, std::string *payload) {
    // Detached: nothing here may throw past it (a garbled length is an error, not an abort).
    try {
        if (in_.size() < kReadAhead) in_.resize(kReadAhead);
        uint64_t size = 0;
        Io io = read_header(tag, lengths, &size);
        if (io != Io::Ok) return io;
        payload->resize(size);
        return read_exactly(payload->data(), size);
    } catch (const std::exception &) {
        return Io::Error;
    }
}

ProcessChild::Io ProcessChild::exchange(Call &call, char *tag, std::vector<uint64_t> *lengths,
                                        std::string *payload, bool *sent) {
    std::vector<Py_buffer *> out;
    for (PyObject *view : call.buffers()) out.push_back(PyMemoryView_GET_BUFFER(view));
    Io io;
    // The caller's buffers are free again as soon as they are sent, not when the task ends.
    // (The call is kept until then: a child found dead before it had it may get a successor.)
    bool written = false;
    Py_BEGIN_ALLOW_THREADS;
    io = write_frame('C', call.payload(), out);
    written = io == Io::Ok;
    if (written && out.empty()) io = read_frame(tag, lengths, payload);
    Py_END_ALLOW_THREADS;
    *sent = written;
    if (written) call.drop_payload();
    if (written && !out.empty()) {
        Py_BEGIN_ALLOW_THREADS;
        io = read_frame(tag, lengths, payload);
        Py_END_ALLOW_THREADS;
    }
    return io;
}

// Out-of-band buffers of an outcome: a large bytes result ('B') is read straight into its bytes
// object; others into bytes or, when writable on the child's side, bytearrays.
Ref ProcessChild::read_buffers(char tag, const std::vector<uint64_t> &lengths, Io *io) {
    Ref buffers = Ref::steal(PyList_New(0));
    if (!buffers) {
        *io = Io::Error;
        return buffers;
    }
    for (uint64_t word : lengths) {
        auto length = static_cast<Py_ssize_t>(word & ~kWritable);
        bool writable = tag != 'B' && (word & kWritable);
        Ref buffer = Ref::steal(writable ? PyByteArray_FromStringAndSize(nullptr, length)
                                         : PyBytes_FromStringAndSize(nullptr, length));
        if (!buffer || PyList_Append(buffers.get(), buffer.get()) < 0) {
            *io = Io::Error;
            return buffers;
        }
        char *into = writable ? PyByteArray_AS_STRING(buffer.get()) : PyBytes_AS_STRING(buffer.get());
        Py_BEGIN_ALLOW_THREADS;
        *io = read_exactly(into, static_cast<size_t>(length));
        Py_END_ALLOW_THREADS;
        if (*io != Io::Ok) return buffers;
    }
    return buffers;
}

bool ProcessChild::run(Call &call) {
    bool ok = run_once(call, /*may_retry=*/!strict_);
    if (max_tasks_ > 0 && process_ && ++tasks_ >= max_tasks_) {
        // The next task starts a new child. (A done-callback's exception, left for the worker
        // loop to report, waits while this runs Python.)
        PyObject *pending = PyErr_GetRaisedException();
        stop();
        PyErr_SetRaisedException(pending);
    }
    return ok;
}

bool ProcessChild::run_once(Call &call, bool may_retry) {
    // The child is awaited only now, with a task in hand: a task goes running as soon as a
    // worker takes it, as the stdlib's pool hands tasks to processes still starting.
    if (!process_ || !ready_) {  // starting, or replaced after max_tasks_per_child or a death
        std::string broken;
        if ((!process_ && !start(&broken)) || !await_ready(&broken)) {
            // An initializer that fails would fail again: this worker's tasks fail from now on.
            if (initializer_failed_ && current_worker) current_worker->broken = broken;
            call.fail_broken(broken);
            return false;
        }
    }
    char tag = 0;
    std::vector<uint64_t> lengths;
    std::string payload;
    bool sent = false;
    Io io = exchange(call, &tag, &lengths, &payload, &sent);
    Ref buffers = io == Io::Ok ? read_buffers(tag, lengths, &io) : Ref();
    if (io != Io::Ok) {
        // The child died (or the pipe broke: then it is ended) and is reaped; the pool's
        // handler decides what that means (compat's breaks the pool, as the stdlib's).
        PyErr_Clear();
        if (io == Io::Error) kill();
        if (!sent && may_retry) {
            // It died idle, before it had this task, which never ran: a new child takes it.
            died(false);
            return run_once(call, false);
        }
        call.fail_broken(died(true));
        return false;
    }
    switch (tag) {
        case 'M':
        case 'P':
            if (lengths.empty() && !strict_) {
                call.finish_remote(true, std::move(payload), tag == 'M' ? Encoding::Marshal : Encoding::Pickle);
                return true;
            }
            return finish_decoded(call, decode_result(tag, payload, buffers.get()), false);
        case 'E':
            if (!strict_) {
                call.finish_remote(false, std::move(payload), Encoding::Pickle);
                return false;
            }
            return finish_decoded(call, decode_exception(payload), true);
        case 'B':
            if (lengths.size() == 1) {
                call.finish_local(nullptr, PyList_GET_ITEM(buffers.get(), 0), false);
                return true;
            }
            [[fallthrough]];
        default: {
            kill();  // it does not speak the protocol (a task wrote to the pipe itself)
            Ref cause = Ref::steal(PyObject_CallFunction(
                PyExc_RuntimeError, "s", "the worker process answered with a malformed frame"));
            call.fail_broken(died(true, cause.get()));
            return false;
        }
    }
}

Ref ProcessChild::decode_result(char tag, const std::string &payload, PyObject *buffers) {
    if (tag == 'M')
        return Ref::steal(decode_value(payload, Encoding::Marshal, nullptr));
    Ref view = Ref::steal(PyMemoryView_FromMemory(const_cast<char *>(payload.data()),
                                                  static_cast<Py_ssize_t>(payload.size()), PyBUF_READ));
    Ref pickle = Ref::steal(PyImport_ImportModule("pickle"));
    Ref loads = pickle ? Ref::steal(PyObject_GetAttrString(pickle.get(), "loads")) : Ref();
    Ref positional = view ? Ref::steal(PyTuple_Pack(1, view.get())) : Ref();
    Ref keywords = Ref::steal(Py_BuildValue("{sO}", "buffers", buffers));
    if (!loads || !positional || !keywords) return Ref();
    return Ref::steal(PyObject_Call(loads.get(), positional.get(), keywords.get()));
}

Ref ProcessChild::decode_exception(const std::string &payload) {
    Ref args = Ref::steal(Py_BuildValue("(Oy#)", Py_False, payload.data(),
                                        static_cast<Py_ssize_t>(payload.size())));
    return args ? call_native("loads_outcome", args.get()) : Ref();
}

bool ProcessChild::finish_decoded(Call &call, Ref decoded, bool is_exception) {
    if (decoded) {
        call.finish_local(nullptr, decoded.get(), is_exception);
        return !is_exception;
    }
    // What stopped the decoding (an interrupt too) is the task's outcome, or breaks the pool.
    Ref cause = Ref::steal(PyErr_GetRaisedException());
    if (strict_) {
        // The stdlib's rules: an outcome that cannot be decoded here breaks the pool.
        kill();
        call.fail_broken(died(true, cause.get()));
    } else {
        call.finish_local(nullptr, cause.get(), true);
    }
    return false;
}

PyObject *read_bytes(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyLong_Check(args[0]) || !PyLong_Check(args[1]) ||
        (nargs == 3 && !PyBytes_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "_read_bytes(fd: int, size: int, prefix: bytes = b'')");
        return nullptr;
    }
    int fd = static_cast<int>(PyLong_AsLong(args[0]));
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred()) return nullptr;
    Py_ssize_t have = nargs == 3 ? PyBytes_GET_SIZE(args[2]) : 0;
    if (size < 0 || have > size) {
        PyErr_SetString(PyExc_ValueError, "_read_bytes: size must be >= 0 and >= len(prefix)");
        return nullptr;
    }
    Ref data = Ref::steal(PyBytes_FromStringAndSize(nullptr, size));
    if (!data) return nullptr;
    char *into = PyBytes_AS_STRING(data.get());
    if (have) std::memcpy(into, PyBytes_AS_STRING(args[2]), static_cast<size_t>(have));
    Py_ssize_t got = have;
    int error = 0;
    bool closed = false;
    Py_BEGIN_ALLOW_THREADS;
    while (got < size) {
        ssize_t n = read(fd, into + got, static_cast<size_t>(size - got));
        if (n > 0) {
            got += n;
        } else if (n == 0) {
            closed = true;
            break;
        } else if (errno != EINTR) {
            error = errno;
            break;
        }
    }
    Py_END_ALLOW_THREADS;
    if (closed) {
        PyErr_SetString(PyExc_EOFError, "the pipe closed mid-frame");
        return nullptr;
    }
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return data.release();
}

}  // namespace unirun::python
