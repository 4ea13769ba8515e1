"""The canary's noise floor (unirun._canary): learned from two control runs, applied to the
candidate. Pure functions: run under every interpreter of the suite."""

import string

import pytest

pytest.importorskip("hypothesis", reason="needs Hypothesis (scripts/bootstrap installs it)")
from hypothesis import given, strategies as st  # noqa: E402

from unirun._canary import learn_noise, normalize, parse_side  # noqa: E402

words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8)
lines = st.lists(st.builds(lambda w, n: f"{w} {n}", words, st.integers(0, 10**6)), min_size=1, max_size=12)


@given(lines)
def test_identical_controls_learn_no_noise(text_lines):
    text = "\n".join(text_lines)
    noise = learn_noise(text, text)
    assert noise == {"shapes": set(), "positions": {}, "order": False, "unstable": False}
    assert normalize(text, noise) == text_lines


@given(lines, st.data())
def test_numbers_that_vary_between_controls_are_masked_and_nothing_else(text_lines, data):
    # every line's number changes between the two control runs
    renumbered = [line.split()[0] + " " + str(int(line.split()[1]) + data.draw(st.integers(1, 10**6)))
                  for line in text_lines]
    first, second = "\n".join(text_lines), "\n".join(renumbered)
    noise = learn_noise(first, second)
    if first == second:
        return
    assert noise["shapes"] == {"number"} and not noise["unstable"]
    # A candidate with other numbers is the same; one with another word is not.
    candidate = [line.split()[0] + " 7" for line in text_lines]
    assert normalize("\n".join(candidate), noise) == normalize(first, noise)
    changed = ["Z" + candidate[0]] + candidate[1:]
    assert normalize("\n".join(changed), noise) != normalize(first, noise)


def test_a_number_that_did_not_vary_is_still_compared_exactly():
    noise = learn_noise("took 0.51 s\nresult 42", "took 0.49 s\nresult 42")
    expected = normalize("took 0.51 s\nresult 42", noise)
    assert normalize("took 0.3 s\nresult 42", noise) == expected
    assert normalize("took 0.3 s\nresult 41", noise) != expected
    assert normalize("took N/A s\nresult 42", noise) != expected


def test_lines_that_only_move_are_compared_as_a_multiset():
    noise = learn_noise("a\nb\nc", "b\na\nc")
    assert noise["order"] and not noise["unstable"]
    assert normalize("c\nb\na", noise) == normalize("a\nb\nc", noise)
    assert normalize("c\nb\nd", noise) != normalize("a\nb\nc", noise)


def test_words_that_vary_leave_no_floor():
    assert learn_noise("state ready", "state busy")["unstable"]
    assert learn_noise("one\ntwo", "one")["unstable"]


def test_lines_that_move_and_carry_timings():
    first = "task b took 0.25 s\ntask a took 0.12 s"
    noise = learn_noise(first, "task a took 0.11 s\ntask b took 0.31 s")
    assert noise["order"] and noise["shapes"] == {"number"} and not noise["unstable"]
    assert normalize("task a took 9 s\ntask b took 1 s", noise) == normalize(first, noise)
    assert normalize("task a took 9 s\ntask c took 1 s", noise) != normalize(first, noise)


def test_hex_addresses_and_numbered_names_are_their_own_shapes():
    noise = learn_noise("at 0x7f00aa in /tmp/tmpab12", "at 0x7f00bb in /tmp/tmpcd34")
    assert noise["shapes"] == {"hex", "name-with-digits"}
    assert normalize("at 0x1 in /tmp/tmpzz99", noise) == normalize("at 0x7f00aa in /tmp/tmpab12", noise)
    assert normalize("at 0x1 in /var/tmpzz99", noise) != normalize("at 0x7f00aa in /tmp/tmpab12", noise)


def test_sides_map_to_launcher_options():
    assert parse_side("nogil+interpreters") == ["--thread-mode=nogil", "--process-pool=interpreters"]
    assert parse_side("compat-off") == ["--compat=off"]
    assert parse_side("") == []
