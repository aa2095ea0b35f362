"""Simulated training runs with injected faults, for the demo and the tests."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimRun:
    run: str
    fault: str | None  # None | "spike" | "nan" | "divergence"
    onset: int | None
    steps: int = 600
    seed: int = 0
    eval_every: int = 20


DEMO_RUNS = (
    SimRun("demo-clean", None, None, seed=1),
    SimRun("demo-spike", "spike", 300, seed=2),
    SimRun("demo-nan", "nan", 420, seed=3),
    SimRun("demo-diverge", "divergence", 250, seed=4),
)


def simulate(sim: SimRun, t0: float | None = None, dt: float = 0.05):
    """Yield ``(step, ts, kind, metrics)`` for one run, in log order.

    Timestamps are ``dt`` apart and end now unless ``t0`` is given.
    """
    if t0 is None:
        t0 = round(time.time() - sim.steps * dt - 1.0, 3)
    rng = np.random.default_rng(sim.seed)
    lr0 = 0.05
    loss_floor = 0.15 + 0.05 * rng.random()
    broken = False
    for step in range(1, sim.steps + 1):
        frac = step / sim.steps
        lr = lr0 * 0.5 * (1 + math.cos(math.pi * frac))
        base = loss_floor + 2.1 * math.exp(-step / 90)
        loss = base * (1 + 0.05 * rng.standard_normal())
        grad = 1.0 * math.exp(-step / 300) + 0.05 * abs(rng.standard_normal())
        if sim.fault == "spike" and step == sim.onset:
            loss *= 12
            grad *= 15
        if sim.fault == "divergence" and step >= sim.onset:
            g = math.exp((step - sim.onset) / 40)
            loss = base * g * (1 + 0.05 * rng.standard_normal())
            grad *= g
            lr = lr0 * 20
        if sim.fault == "nan" and step >= sim.onset:
            broken = True
        acc = max(0.0, min(1.0, 1 - loss / 2.5 + 0.02 * rng.standard_normal()))
        if broken:
            loss = grad = float("nan")
            acc = 0.1
        ts = t0 + step * dt
        yield step, ts, "train", {"loss": loss, "accuracy": acc, "grad_norm": grad, "lr": lr}
        if step % sim.eval_every == 0:
            vl = float("nan") if broken else loss * 1.1 + 0.02 * abs(rng.standard_normal())
            yield step, ts, "eval", {"val_loss": vl, "val_accuracy": acc * 0.97}
