"""The pace a run learns and the time left it gives: exact figures from fixed measurements (the pipeline's
own test checks that the events carry them; the arithmetic is checked here, away from a noisy clock)."""

import pytest

from nbkit.generation.progress import Pace, describe, duration


def test_time_left_is_the_steps_left_times_the_step_plus_the_decodes_left():
    pace = Pace()
    assert pace.seconds_left([(2, 10)], [2]) == (None, False)          # nothing measured: no guess
    pace.learn_steps(2, steps=64, seconds=6.4)                          # 0.1 s a step
    assert pace.seconds_left([(2, 192)], [2]) == (pytest.approx(19.2), False)   # decode not timed yet
    pace.learn_decode(2, seconds=5.0, compiled=True)                    # cold: counts until a warm one
    pace.learn_decode(2, seconds=1.0, compiled=False)
    pace.learn_decode(2, seconds=9.0, compiled=True)                    # a later cold one doesn't replace it
    early, timed = pace.seconds_left([(2, 192), (2, 256)], [2, 2])
    late, _ = pace.seconds_left([(2, 64), (2, 256)], [2, 2])
    assert timed and early == pytest.approx(0.1 * 448 + 2.0) and late == pytest.approx(0.1 * 320 + 2.0)
    assert late < early                                                 # it shrinks as tokens are drawn


def test_a_step_time_is_smoothed_and_an_unmeasured_size_scaled_from_the_nearest():
    pace = Pace()
    pace.learn_steps(2, steps=10, seconds=1.0)
    pace.learn_steps(2, steps=10, seconds=3.0)                          # 0.1 then 0.3: the mean, 0.2
    assert pace.step_seconds[2] == pytest.approx(0.2)
    pace.learn_steps(2, steps=0, seconds=5.0)                           # nothing drawn: nothing learned
    assert pace.step_seconds[2] == pytest.approx(0.2)
    assert pace.seconds_left([(8, 10)], [])[0] == pytest.approx(0.2 * 4 * 10)   # 4× the rows: an upper bound
    assert pace.seconds_left([(1, 10)], [])[0] == pytest.approx(0.2 * 10)       # fewer rows: not faster


def test_labels_use_the_one_vocabulary():
    assert duration(4.2) == "5 s" and duration(150) == "2 min"
    label = describe("drawing", 0, 3, 64, 256, seconds_left=30, decode_timed=False)
    assert label.startswith("drawing") and "about 30 s left (+ decoding, not yet timed)" in label
