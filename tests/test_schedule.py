"""TAID's adaptive schedule checked against the paper's update rule traced by hand, and its invariants."""

import json
import math

import numpy as np
import pytest

from taid.schedule import TAIDSchedule


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def linear(t_start, t_end, k, n):
    """The schedule without adaptation after optimizer step k of n."""
    return t_start + (t_end - t_start) * k / n


def run(schedule, objectives):
    """t after each update, in order."""
    ts = []
    for j in objectives:
        schedule.update(j)
        ts.append(schedule.t)
    return ts


def random_objectives(rng, n):
    """A noisy, mostly falling loss curve with occasional rises."""
    return list(np.exp(rng.normal(-0.02, 0.1, size=n).cumsum()) * rng.uniform(1.0, 5.0))


# ----------------------------------------------------------------------------- a hand-traced run
def test_hand_traced_sequence():
    # t_start 0.4, t_end 1.0, alpha 0.3, beta 0.5, N = 10
    s = TAIDSchedule(t_start=0.4, t_end=1.0, alpha=0.3, beta=0.5, total_steps=10)
    assert s.t == 0.4
    J = [4.0, 3.0, 2.7, 2.6, 2.9, 2.0, 2.0, 1.5, 1.4, 1.3]
    got = run(s, J)

    # step 1: J = 4.0 -> prev = 4.0, m = 0, t unchanged
    t1 = 0.4
    # step 2: J = 3.0
    d2 = (4.0 - 3.0) / 4.0                       # 0.25
    m2 = 0.5 * 0.0 + 0.5 * d2                    # 0.125
    floor2 = 0.4 + 0.6 * 2 / 10                  # 0.52
    push2 = t1 + 0.3 * sigmoid(m2) * (1 - t1)    # 0.4 + 0.3 * 0.531209 * 0.6 = 0.495618
    assert push2 < floor2                        # the floor wins
    t2 = floor2
    # step 3: J = 2.7
    d3 = (3.0 - 2.7) / 3.0                       # 0.1
    m3 = 0.5 * m2 + 0.5 * d3                     # 0.1125
    floor3 = 0.4 + 0.6 * 3 / 10                  # 0.58
    push3 = t2 + 0.3 * sigmoid(m3) * (1 - t2)    # 0.52 + 0.3 * 0.528095 * 0.48 = 0.596046
    assert push3 > floor3                        # the adaptive push wins
    t3 = push3
    # step 4: J = 2.6
    d4 = (2.7 - 2.6) / 2.7                       # 0.037037
    m4 = 0.5 * m3 + 0.5 * d4                     # 0.074769
    floor4 = 0.4 + 0.6 * 4 / 10                  # 0.64
    push4 = t3 + 0.3 * sigmoid(m4) * (1 - t3)    # 0.658903
    assert push4 > floor4
    t4 = push4
    # step 5: J = 2.9, the objective rises
    d5 = (2.6 - 2.9) / 2.6                       # -0.115385
    assert d5 < 0
    m5 = 0.5 * m4 + 0.5 * d5                     # -0.020308, sigmoid < 1/2
    floor5 = 0.4 + 0.6 * 5 / 10                  # 0.70
    push5 = t4 + 0.3 * sigmoid(m5) * (1 - t4)    # 0.658903 + 0.3 * 0.494923 * 0.341097 = 0.709548
    assert push5 > floor5                        # still ahead of the floor, but only just
    t5 = push5
    # step 6: J = 2.0
    d6 = (2.9 - 2.0) / 2.9                       # 0.310345
    m6 = 0.5 * m5 + 0.5 * d6                     # 0.145018
    floor6 = 0.4 + 0.6 * 6 / 10                  # 0.76
    push6 = t5 + 0.3 * sigmoid(m6) * (1 - t5)    # 0.756269
    assert push6 < floor6                        # the floor catches up
    t6 = floor6
    # step 7: J = 2.0, no change (delta = 0)
    m7 = 0.5 * m6 + 0.5 * 0.0                    # 0.072509
    push7 = t6 + 0.3 * sigmoid(m7) * (1 - t6)    # 0.797305
    t7 = max(0.4 + 0.6 * 7 / 10, push7)          # 0.82 (floor)
    # step 8: J = 1.5
    m8 = 0.5 * m7 + 0.5 * (2.0 - 1.5) / 2.0      # 0.161255
    push8 = t7 + 0.3 * sigmoid(m8) * (1 - t7)    # 0.849172
    t8 = max(0.4 + 0.6 * 8 / 10, push8)          # 0.88 (floor)
    # step 9: J = 1.4
    m9 = 0.5 * m8 + 0.5 * (1.5 - 1.4) / 1.5      # 0.113961
    push9 = t8 + 0.3 * sigmoid(m9) * (1 - t8)    # 0.899025
    t9 = max(0.4 + 0.6 * 9 / 10, push9)          # 0.94 (floor)
    # step 10 = N: the floor reaches t_end
    t10 = 1.0

    expected = [t1, t2, t3, t4, t5, t6, t7, t8, t9, t10]
    assert got == pytest.approx(expected, abs=1e-12)
    assert s.momentum == pytest.approx(0.5 * m9 + 0.5 * (1.4 - 1.3) / 1.4, abs=1e-12)


def test_momentum_weights_with_asymmetric_beta():
    # beta 0.8 tells beta from 1 - beta; floor steps of 0.01 stay far behind the push
    s = TAIDSchedule(t_start=0.0, t_end=1.0, alpha=0.5, beta=0.8, total_steps=100)
    got = run(s, [2.0, 1.0, 1.5])
    t1 = 0.0
    m2 = 0.8 * 0.0 + 0.2 * (2.0 - 1.0) / 2.0      # 0.1
    t2 = t1 + 0.5 * sigmoid(m2) * (1 - t1)         # 0.262490
    m3 = 0.8 * m2 + 0.2 * (1.0 - 1.5) / 1.0        # 0.08 - 0.1 = -0.02
    t3 = t2 + 0.5 * sigmoid(m3) * (1 - t2)         # 0.262490 + 0.5 * 0.495000 * 0.737510 = 0.445023
    assert got == pytest.approx([t1, t2, t3], abs=1e-12)
    assert s.momentum == pytest.approx(m3, abs=1e-12)


def test_push_past_t_end_is_capped():
    # t_end < 1 so that a large push can overshoot it
    s = TAIDSchedule(t_start=0.2, t_end=0.5, alpha=1.0, beta=0.0, total_steps=100)
    s.update(2.0)
    assert s.t == 0.2
    s.update(1.0)
    # m = 0.5, push = 0.2 + 1.0 * sigmoid(0.5) * 0.8 = 0.699 > t_end
    assert 0.2 + sigmoid(0.5) * 0.8 > 0.5
    assert s.t == pytest.approx(0.5, abs=1e-15)


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("seed", range(20))
def test_random_runs_stay_in_range_monotone_and_end_at_t_end(seed):
    rng = np.random.default_rng(seed)
    t_start = float(rng.uniform(0.0, 0.9))
    t_end = float(rng.uniform(t_start, 1.0))
    n = int(rng.integers(2, 60))
    alpha = float(10 ** rng.uniform(-4, 0))
    beta = float(rng.uniform(0.0, 0.999))
    s = TAIDSchedule(t_start, t_end, alpha, beta, n)
    ts = run(s, random_objectives(rng, n))
    assert len(ts) == n
    assert ts[0] == t_start  # first update: nothing to compare with
    for k, t in enumerate(ts, start=1):
        assert t_start <= t <= t_end
        if k >= 2:
            assert t >= linear(t_start, t_end, k, n) - 1e-12
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    assert ts[-1] == pytest.approx(t_end, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_without_adaptation_is_linear_whatever_the_objectives(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 40))
    s = TAIDSchedule(0.2, 0.9, alpha=0.5, beta=0.5, total_steps=n, adaptive=False)
    ts = run(s, random_objectives(rng, n))
    assert ts == pytest.approx([linear(0.2, 0.9, k, n) for k in range(1, n + 1)], abs=1e-12)


def test_relative_decrease_makes_schedule_scale_invariant():
    rng = np.random.default_rng(7)
    objectives = random_objectives(rng, 30)
    a = run(TAIDSchedule(0.4, 1.0, 0.2, 0.9, 30), objectives)
    b = run(TAIDSchedule(0.4, 1.0, 0.2, 0.9, 30), [1000.0 * j for j in objectives])
    assert a == pytest.approx(b, abs=1e-12)


def test_official_defaults_follow_the_floor_on_a_short_run():
    n = 50
    s = TAIDSchedule(t_start=0.4, t_end=1.0, alpha=5e-4, beta=0.99, total_steps=n)
    # a steeply falling objective, the most favourable case for the adaptive push
    ts = run(s, [10.0 * 0.5 ** k for k in range(n)])
    assert ts[0] == 0.4
    assert ts[1:] == pytest.approx([linear(0.4, 1.0, k, n) for k in range(2, n + 1)], abs=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2, 7])
def test_state_dict_round_trip_resumes_identically(k):
    args = dict(t_start=0.3, t_end=0.95, alpha=0.2, beta=0.8, total_steps=12)
    objectives = random_objectives(np.random.default_rng(3), 12)
    reference = run(TAIDSchedule(**args), objectives)

    first = TAIDSchedule(**args)
    run(first, objectives[:k])
    state = json.loads(json.dumps(first.state_dict()))  # as stored in a checkpoint
    resumed = TAIDSchedule(**args)
    resumed.load_state_dict(state)
    assert resumed.t == (reference[k - 1] if k else args["t_start"])
    assert run(resumed, objectives[k:]) == reference[k:]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(t_start=0.8, t_end=0.5),
        dict(t_start=-0.1, t_end=0.5),
        dict(t_start=0.4, t_end=1.2),
        dict(t_start=0.4, t_end=1.0, total_steps=0),
        dict(t_start=0.4, t_end=1.0, total_steps=-3),
    ],
)
def test_bad_arguments_raise(kwargs):
    kwargs.setdefault("total_steps", 10)
    with pytest.raises(ValueError):
        TAIDSchedule(**kwargs)
