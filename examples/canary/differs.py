"""Really differs between a GIL and a free-threaded runtime: it says what it runs on."""
import sys

if __name__ == "__main__":
    print("gil enabled:", sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True)
