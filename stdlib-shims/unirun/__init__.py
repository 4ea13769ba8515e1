"""unirun: one native scheduler for every concurrent.futures executor.

See docs/guide.md. Under unirun-python the executors are backed by the native scheduler
(_unirun); elsewhere the package falls back to the standard library.
"""

__version__ = "0.1.0"
