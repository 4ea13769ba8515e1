"""Under plain python the unirun package comes from the source tree; under unirun-python the
launcher already put it on sys.path."""

import pathlib
import sys

try:
    import unirun  # noqa: F401
except ImportError:
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[2] / "stdlib-shims"))

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # native_tasks, package_tasks
