#include "python/process.hpp"

#include "python/pool.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace unirun::python {

namespace {

constexpr size_t kHeaderSize = 13;  // tag, u32 buffer count, u64 payload length
constexpr size_t kReadAhead = 1 << 16;

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

}  // namespace

ProcessChild::~ProcessChild() {
    close_pipes();
    Py_XDECREF(process_);  // stop() reaped it; only an abandoned start leaves one here
}

void ProcessChild::close_pipes() {
    if (to_child_ >= 0) close(to_child_);
    if (from_child_ >= 0) close(from_child_);
    to_child_ = from_child_ = -1;
    in_begin_ = in_end_ = 0;
}

bool ProcessChild::start(std::string *broken) {
    tasks_ = 0;
    Ref args = Ref::steal(PyTuple_Pack(1, pool_));
    Ref started = args ? call_native("start_process_child", args.get()) : Ref();
    if (!started || !PyTuple_Check(started.get()) || PyTuple_GET_SIZE(started.get()) != 3) {
        Ref error = Ref::steal(PyErr_GetRaisedException());
        *broken = error ? report_start_error(pool_, error.get())
                        : report_start_message(pool_, "cannot start a worker process");
        return false;
    }
    process_ = Py_NewRef(PyTuple_GET_ITEM(started.get(), 0));
    to_child_ = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(started.get(), 1)));
    from_child_ = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(started.get(), 2)));
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
    if (!lengths.empty()) io = Io::Error;
    if (io == Io::Ok && tag == 'R') {
        ready_ = true;
        return true;
    }
    if (io == Io::Ok && tag == 'F') {
        stop();  // it leaves after reporting
        *broken = report_start_failure(pool_, reply);
        return false;
    }
    // It died before it could answer (or spoke nonsense): a death like any other.
    *broken = died(false);
    return false;
}

void ProcessChild::stop() {
    if (!process_) return;
    if (to_child_ >= 0) close(to_child_);  // end-of-file: the child exits
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

ProcessChild::Io ProcessChild::write_frame(char tag, const std::string &payload,
                                           const std::vector<Py_buffer *> &buffers) {
    std::string head(kHeaderSize + 8 * buffers.size(), '\0');
    head[0] = tag;
    put_u32(head.data() + 1, static_cast<uint32_t>(buffers.size()));
    put_u64(head.data() + 5, payload.size());
    for (size_t i = 0; i < buffers.size(); ++i)
        put_u64(head.data() + kHeaderSize + 8 * i, static_cast<uint64_t>(buffers[i]->len));
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
        ssize_t got;
        if (size >= kReadAhead) {  // large: straight into place
            got = read(from_child_, into, size);
            if (got > 0) {
                into += got;
                size -= static_cast<size_t>(got);
                continue;
            }
        } else {
            if (in_.size() < kReadAhead) in_.resize(kReadAhead);
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
        if (errno == EINTR) continue;
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
    if (count > 1 << 20) return Io::Error;
    lengths->resize(count);
    for (auto &length : *lengths) {
        char raw[8];
        if ((io = read_exactly(raw, 8)) != Io::Ok) return io;
        length = get_u(raw, 8);
    }
    return Io::Ok;
}

ProcessChild::Io ProcessChild::read_frame(char *tag, std::vector<uint64_t> *lengths, std::string *payload) {
    uint64_t size = 0;
    Io io = read_header(tag, lengths, &size);
    if (io != Io::Ok) return io;
    payload->resize(size);
    return read_exactly(payload->data(), size);
}

bool ProcessChild::run(Call &call) {
    // The child is awaited only now, with a task in hand: a task goes running as soon as a
    // worker takes it, as the stdlib's pool hands tasks to processes still starting.
    if (!process_ || !ready_) {  // starting, or replaced after max_tasks_per_child or a death
        std::string broken;
        if ((!process_ && !start(&broken)) || !await_ready(&broken)) {
            if (current_worker) current_worker->broken = broken;  // no new child each task
            call.fail_broken(broken);
            return false;
        }
    }
    std::vector<Py_buffer *> out;
    for (PyObject *view : call.buffers()) out.push_back(PyMemoryView_GET_BUFFER(view));
    char tag = 0;
    std::vector<uint64_t> lengths;
    std::string payload;
    Io io;
    Py_BEGIN_ALLOW_THREADS;
    io = write_frame('C', call.payload(), out);
    if (io == Io::Ok) io = read_frame(&tag, &lengths, &payload);
    Py_END_ALLOW_THREADS;
    call.drop_payload();
    // Out-of-band buffers: a large bytes result ('B') is read straight into its bytes object;
    // others into bytearrays, for pickle.loads(buffers=...).
    Ref buffers = io == Io::Ok ? Ref::steal(PyList_New(0)) : Ref();
    for (size_t i = 0; io == Io::Ok && i < lengths.size(); ++i) {
        auto length = static_cast<Py_ssize_t>(lengths[i]);
        Ref buffer = Ref::steal(tag == 'B' ? PyBytes_FromStringAndSize(nullptr, length)
                                           : PyByteArray_FromStringAndSize(nullptr, length));
        if (!buffer || PyList_Append(buffers.get(), buffer.get()) < 0) {
            io = Io::Error;
            break;
        }
        char *into = tag == 'B' ? PyBytes_AS_STRING(buffer.get()) : PyByteArray_AS_STRING(buffer.get());
        Py_BEGIN_ALLOW_THREADS;
        io = read_exactly(into, static_cast<size_t>(length));
        Py_END_ALLOW_THREADS;
    }
    if (io != Io::Ok) {
        // The child died (or the pipe broke): the task fails, the child is reaped.
        PyErr_Clear();
        if (io == Io::Error) {
            // A pipe that fails otherwise than by closing: end the child, then report it.
            Ref killed = Ref::steal(PyObject_CallMethod(process_, "kill", nullptr));
            PyErr_Clear();
        }
        call.fail_broken(died(true));
        return false;
    }
    bool ok = false;
    switch (tag) {
        case 'M':
        case 'P':
            if (lengths.empty() && strict_) {
                // The stdlib's rules: a result that cannot be decoded here breaks the pool.
                Ref loads = Ref::steal(PyImport_ImportModule("pickle"));
                Ref function = loads ? Ref::steal(PyObject_GetAttrString(loads.get(), "loads")) : Ref();
                Ref value = function ? Ref::steal(decode_value(payload, tag == 'M' ? Encoding::Marshal : Encoding::Pickle,
                                                               function.get()))
                                     : Ref();
                if (!value) {
                    Ref cause = Ref::steal(PyErr_GetRaisedException());
                    call.fail_broken(died(true, cause.get()));
                    return false;
                }
                call.finish_local(nullptr, value.get(), false);
                ok = true;
                break;
            } else if (lengths.empty()) {
                call.finish_remote(true, std::move(payload), tag == 'M' ? Encoding::Marshal : Encoding::Pickle);
                ok = true;
                break;
            } else {
                // Decoded here, attached to the owner, with the buffers in place.
                Ref view = Ref::steal(PyMemoryView_FromMemory(payload.data(), static_cast<Py_ssize_t>(payload.size()), PyBUF_READ));
                Ref pickle = Ref::steal(PyImport_ImportModule("pickle"));
                Ref function = pickle ? Ref::steal(PyObject_GetAttrString(pickle.get(), "loads")) : Ref();
                Ref positional = view ? Ref::steal(PyTuple_Pack(1, view.get())) : Ref();
                Ref keywords = Ref::steal(Py_BuildValue("{sO}", "buffers", buffers.get()));
                Ref result = function && positional && keywords
                                 ? Ref::steal(PyObject_Call(function.get(), positional.get(), keywords.get()))
                                 : Ref();
                ok = static_cast<bool>(result);
                Ref outcome = ok ? std::move(result) : Ref::steal(PyErr_GetRaisedException());
                call.finish_local(nullptr, outcome.get(), !ok);
            }
            break;
        case 'B':
            if (PyList_GET_SIZE(buffers.get()) == 1) {
                call.finish_local(nullptr, PyList_GET_ITEM(buffers.get(), 0), false);
                ok = true;
                break;
            }
            [[fallthrough]];
        default:
            call.fail_broken("the worker process answered with a malformed frame");
            stop();
            return false;
        case 'E':
            call.finish_remote(false, std::move(payload), Encoding::Pickle);
            break;
    }
    if (max_tasks_ > 0 && ++tasks_ >= max_tasks_) stop();  // the next task starts a new child
    return ok;
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
