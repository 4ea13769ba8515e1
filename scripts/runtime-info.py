"""Describe the CPython running this script, for meson.

Run by meson with each registered runtime's own interpreter:
    python3.13 scripts/runtime-info.py TAG LIBRARY SHIMS_DIR
"""

import json
import sys
import sysconfig

tag, library, shims = sys.argv[1:4]
free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
version = "%d.%d.%d" % sys.version_info[:3]
if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
    sys.exit(f"{sys.executable} has no shared libpython: rebuild it with --enable-shared")
if sys.version_info < (3, 11):
    sys.exit(f"{sys.executable} is Python {version}; unirun-python needs 3.11 or newer")
libname = sysconfig.get_config_var("LDLIBRARY")  # e.g. libpython3.13t.so
# One value a line, in this order (meson.build reads them by position).
print(sysconfig.get_path("include"))
print(sysconfig.get_config_var("LIBDIR"))
print(libname.removeprefix("lib").removesuffix(".so"))
print(json.dumps(shims))
print(json.dumps({
    "tag": tag,
    "version": version,
    "free_threaded": free_threaded,
    "python": sys.executable,
    "library": library,
}))
