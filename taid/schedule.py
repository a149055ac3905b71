"""TAID's adaptive interpolation schedule (Shing et al., ICLR 2025, Eq. 5–6).

t moves from ``t_start`` to ``t_end`` over the run. It never falls below the linear floor
``t_start + (t_end - t_start) * k / N`` and speeds up while the step objective keeps falling
(a momentum of its relative decrease, squashed by a sigmoid). Updated once per optimizer step,
with the objective averaged over the step's micro-batches and over all ranks by the caller.
"""
import math


class TAIDSchedule:
    def __init__(self, t_start=0.4, t_end=1.0, alpha=5e-4, beta=0.99, total_steps=1, adaptive=True):
        if not 0.0 <= t_start <= t_end <= 1.0:
            raise ValueError(f"need 0 <= t_start <= t_end <= 1, got t_start={t_start}, t_end={t_end}")
        if alpha < 0 or not 0.0 <= beta < 1.0:
            raise ValueError(f"need alpha >= 0 and 0 <= beta < 1, got alpha={alpha}, beta={beta}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.alpha, self.beta = float(alpha), float(beta)
        self.total_steps, self.adaptive = int(total_steps), bool(adaptive)
        self.t = self.t_start
        self.step = 0
        self.momentum = 0.0
        self.prev_objective = None

    def linear_floor(self, step):
        return self.t_start + (self.t_end - self.t_start) * min(step, self.total_steps) / self.total_steps

    def update(self, step_objective):
        """Advance t after one optimizer step whose mean objective was ``step_objective``."""
        objective = float(step_objective)
        self.step += 1
        floor = self.linear_floor(self.step)
        if not self.adaptive:
            self.t = floor
            return self.t
        if self.prev_objective is None:  # first step: nothing to compare with yet, t unchanged
            self.prev_objective = objective
            return self.t
        relative_decrease = (self.prev_objective - objective) / (self.prev_objective + 1e-15)
        self.momentum = self.beta * self.momentum + (1 - self.beta) * relative_decrease
        self.prev_objective = objective
        pushed = self.t + self.alpha * _sigmoid(self.momentum) * (1 - self.t)
        self.t = min(self.t_end, max(floor, pushed))
        return self.t

    def state_dict(self):
        return {"t": self.t, "step": self.step, "momentum": self.momentum, "prev_objective": self.prev_objective}

    def load_state_dict(self, state):
        self.t, self.step = float(state["t"]), int(state["step"])
        self.momentum = float(state["momentum"])
        prev = state["prev_objective"]
        self.prev_objective = None if prev is None else float(prev)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))
