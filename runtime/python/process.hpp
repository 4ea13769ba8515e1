// Process workers: each worker thread of a "processes" pool drives one child process
// (unirun/_process_child.py), started by the pool's multiprocessing context through
// unirun._native.start_process_child and fed one call at a time over a pipe. Calls are encoded as for interpreter workers (a pickled call,
// with protocol 5 out-of-band buffers sent raw); outcomes come back in the same encodings.
//
// Frames, both ways: tag (1 byte), the number of buffers (u32), the payload's length (u64),
// each buffer's length (u64; the top bit set for a writable buffer), the payload, then the
// buffers; little-endian. Parent to child: 'C' call, 'Q' leave. Child to parent: 'R' ready,
// 'F' initializer failed, 'M'/'P' value (marshal / pickle), 'B' large bytes, 'E' exception.
#pragma once

#include "python/call.hpp"
#include "python/ref.hpp"

#include <string>
#include <vector>

namespace unirun::python {

class ProcessChild {
   public:
    // `pool`: the _unirun.Pool (borrowed: its worker thread holds it); `max_tasks`: tasks per
    // child before it is replaced (0: no limit); `strict`: the stdlib's rules (an outcome that
    // cannot be decoded here breaks the pool, so outcomes are decoded at once; a child found
    // dead before it had a task fails that task rather than passing it to a new child).
    ProcessChild(PyObject *pool, long max_tasks, bool strict)
        : pool_(pool), max_tasks_(max_tasks), strict_(strict) {}
    ~ProcessChild();
    ProcessChild(const ProcessChild &) = delete;
    ProcessChild &operator=(const ProcessChild &) = delete;

    // Starts the child (or takes the one a submit started); await_ready() then waits until it
    // has run the initializer. On failure each returns false with `broken` set to the message
    // its tasks fail with (the failure was reported to the pool's creator). Attached to the
    // pool's interpreter.
    bool start(std::string *broken);
    bool await_ready(std::string *broken);
    // Runs `call` in the child and delivers its outcome; a child that dies fails it with
    // BrokenProcessPool. Attached to the pool's interpreter.
    bool run(Call &call);
    // Ends the child: asks it to leave (a 'Q' frame, then end-of-file) and reaps it. Attached.
    void stop();

   private:
    enum class Io { Ok, Closed, Error };
    bool run_once(Call &call, bool may_retry);
    // Sends the call and reads the outcome's header and payload; `sent`: the child had it all.
    Io exchange(Call &call, char *tag, std::vector<uint64_t> *lengths, std::string *payload, bool *sent);
    Ref read_buffers(char tag, const std::vector<uint64_t> &lengths, Io *io);
    Ref decode_result(char tag, const std::string &payload, PyObject *buffers);
    Ref decode_exception(const std::string &payload);
    // Ends the call with a decoded outcome, or with what stopped the decoding.
    bool finish_decoded(Call &call, Ref decoded, bool is_exception);
    Io write_frame(char tag, const std::string &payload, const std::vector<Py_buffer *> &buffers);
    Io read_header(char *tag, std::vector<uint64_t> *lengths, uint64_t *payload_size);
    Io read_exactly(char *into, size_t size);
    // The header and the payload (not the buffers, which follow): detached.
    Io read_frame(char *tag, std::vector<uint64_t> *lengths, std::string *payload);
    // Until `fd` is ready for `events`, or the child has ended (Closed). Detached.
    Io wait_for(int fd, short events);
    // The child ended unasked (or, with `cause`, sent what cannot be decoded here: it is
    // killed): reap it and return the message its task fails with.
    std::string died(bool during_task, PyObject *cause = nullptr);
    void kill();
    void close_pipes();

    PyObject *pool_;
    long max_tasks_;
    bool strict_;
    long tasks_ = 0;
    bool ready_ = false;
    bool initializer_failed_ = false;  // or the child could not even be started
    PyObject *process_ = nullptr;  // the running child's multiprocessing Process, or null
    int to_child_ = -1, from_child_ = -1;
    int sentinel_ = -1;            // process_.sentinel: readable once the child has ended
    std::vector<char> in_;  // read-ahead from the child
    size_t in_begin_ = 0, in_end_ = 0;
};

// Process workers' threads write to pipes whose reader may have died: EPIPE, never SIGPIPE.
void block_sigpipe_on_this_thread();

// _unirun._read_bytes(fd, size, prefix=b""): in a worker process, a bytes object of `size`
// bytes: `prefix`, then the rest read from `fd` straight into it (no copy through a buffer).
PyObject *read_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

}  // namespace unirun::python
