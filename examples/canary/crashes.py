"""Dies on a free-threaded runtime, killed as the kernel's OOM killer or a crashing extension
would end it: the canary says `candidate failed`."""
import os
import signal
import sys

if __name__ == "__main__":
    print("starting")
    sys.stdout.flush()
    if hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled():
        os.kill(os.getpid(), signal.SIGKILL)  # (not abort(): a sanitizer build would catch that)
    print("done")
