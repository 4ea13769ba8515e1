"""A small suite for the canary's per-test comparison: one test fails only free-threaded."""
import concurrent.futures as cf
import sys

import pytest


def test_arithmetic():
    assert sum(range(10)) == 45


def test_executor_map():
    with cf.ThreadPoolExecutor(2) as executor:
        assert list(executor.map(abs, [-1, -2])) == [1, 2]


def test_assumes_the_gil():
    # The kind of assumption a fleet finds when it moves: fine with a GIL, wrong without one.
    assert not hasattr(sys, "_is_gil_enabled") or sys._is_gil_enabled()


@pytest.mark.skip(reason="shows up as skipped in both configurations")
def test_skipped():
    raise AssertionError
