"""What the runtime under test offers, for the suites' skip marks."""

import pytest

try:
    import _unirun
except ImportError:
    _unirun = None

# unirun's own interpreter workers: under unirun-python, on a runtime with usable own-GIL
# subinterpreters (3.13+, 3.12.4+; a 3.11 runtime has the launcher and threads, not these).
NATIVE_INTERPRETERS = _unirun is not None and getattr(_unirun, "OWN_GIL_INTERPRETERS", True)

needs_native_interpreters = pytest.mark.skipif(
    not NATIVE_INTERPRETERS,
    reason="no unirun interpreter workers on this runtime: "
    + getattr(_unirun, "OWN_GIL_INTERPRETERS_MISSING", "not under unirun-python"))
