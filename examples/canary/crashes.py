"""Crashes on a free-threaded runtime (as an extension that is not thread-safe may): the canary
says `candidate failed`."""
import os
import sys

if __name__ == "__main__":
    print("starting")
    sys.stdout.flush()
    if hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled():
        os.abort()
    print("done")
