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
    xrng = np.random.default_rng(sim.seed + 1000)  # extras draw apart: core values unchanged
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
        metrics = {"loss": loss, "accuracy": acc, "grad_norm": grad, "lr": lr}
        metrics.update(_extras(sim, step, grad, broken, xrng))
        yield step, ts, "train", metrics
        if step % sim.eval_every == 0:
            vl = float("nan") if broken else loss * 1.1 + 0.02 * abs(rng.standard_normal())
            yield step, ts, "eval", {"val_loss": vl, "val_accuracy": acc * 0.97}


LAYERS = ("embed", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp", "head")
INTERNALS_EVERY = 10  # model internals are sampled, as ``watch()`` does
SYSTEM_EVERY = 5
RANK_HOSTS = (("0", "node-0"), ("1", "node-0"), ("2", "node-1"), ("3", "node-1"))
STRAGGLER = {"demo-spike": "3"}  # run -> the rank that lags (lower GPU use, less CPU)


def _extras(sim: SimRun, step: int, grad: float, broken: bool, rng) -> dict:
    """Timing metrics every step; per-layer internals every ``INTERNALS_EVERY`` steps."""
    st = 0.05 * float(np.exp(0.05 * rng.standard_normal()))
    out = {"step_time_s": st, "samples_per_s": 64 / st}
    if step % INTERNALS_EVERY:
        return out
    for i, layer in enumerate(LAYERS):
        share = (1.0 + 0.3 * i) / len(LAYERS)
        g = grad * share * float(np.exp(0.05 * rng.standard_normal()))
        out[f"grad_norm/{layer}"] = float("nan") if broken else g
        out[f"update_ratio/{layer}"] = 1e-3 * (1 + 0.2 * i) * (1 + 0.02 * rng.standard_normal())
        out[f"act_mean/{layer}"] = 0.1 * i + 0.01 * rng.standard_normal()
        out[f"act_std/{layer}"] = 1.0 + 0.1 * i + 0.01 * rng.standard_normal()
        out[f"act_zero_frac/{layer}"] = 0.3 + 0.02 * i + 0.005 * rng.standard_normal()
        if layer.endswith("attn"):
            out[f"attn_entropy/{layer}"] = 2.0 - 0.2 * i + 0.01 * rng.standard_normal()
    return out


def simulate_system(sim: SimRun, t0: float | None = None, dt: float = 0.05):
    """Yield ``(step, ts, tags, metrics)`` system events per rank every ``SYSTEM_EVERY`` steps."""
    if t0 is None:
        t0 = round(time.time() - sim.steps * dt - 1.0, 3)
    rng = np.random.default_rng(sim.seed + 2000)
    for step in range(SYSTEM_EVERY, sim.steps + 1, SYSTEM_EVERY):
        for rank, host in RANK_HOSTS:
            slow = STRAGGLER.get(sim.run) == rank
            util = (55.0 if slow else 94.0) + 2.0 * rng.standard_normal()
            yield step, t0 + step * dt, {"rank": rank, "host": host, "node": host}, {
                "cpu_percent": (70.0 if slow else 85.0) + 3.0 * rng.standard_normal(),
                "rss_mb": 2048.0 + 128 * int(rank) + 4.0 * rng.standard_normal(),
                "gpu_util": min(100.0, util),
                "gpu_mem_mb": 10240.0 + 8.0 * rng.standard_normal(),
                "gpu_temp_c": 62.0 + 1.0 * rng.standard_normal(),
            }


SERVE_RUN = SimRun("demo-serve", "latency_shift", 350, seed=5)


def simulate_serve(sim: SimRun = SERVE_RUN, t0: float | None = None, dt: float = 0.05):
    """Yield ``(step, ts, tags, metrics)`` inference events (one request per step).

    The ``latency_shift`` fault doubles latency and halves tokens/s from ``onset`` on.
    """
    if t0 is None:
        t0 = round(time.time() - sim.steps * dt - 1.0, 3)
    rng = np.random.default_rng(sim.seed)
    for step in range(1, sim.steps + 1):
        slow = sim.fault == "latency_shift" and sim.onset is not None and step >= sim.onset
        completion = int(rng.integers(90, 110))
        tps = (25.0 if slow else 50.0) * float(np.exp(0.05 * rng.standard_normal()))
        ttft = (80.0 if slow else 40.0) * float(np.exp(0.1 * rng.standard_normal()))
        latency = ttft + 1000.0 * completion / tps
        err = 1.0 if slow and rng.random() < 0.05 else 0.0
        prompt = int(rng.integers(50, 500))
        yield step, t0 + step * dt, {"model": "demo-lm", "host": "serve-0"}, {
            "latency_ms": latency, "ttft_ms": ttft, "tokens_per_s": tps, "error": err,
            "prompt_tokens": float(prompt),
            "completion_tokens": float(completion), "request_bytes": 4.0 * prompt,
            "response_bytes": 4.0 * completion,
        }


class RunMix:
    """A compressed day of training runs: ``concurrent`` runs at a time, each ``min_steps``
    to ``max_steps`` long; when one ends (with its ``end`` event) a new one starts. Each
    event carries loss, accuracy, grad_norm and lr; one loss spike per run."""

    def __init__(self, concurrent: int, min_steps: int, max_steps: int, seed: int = 0,
                 prefix: str = "soak"):
        self.rng = np.random.default_rng(seed)
        self.min_steps, self.max_steps, self.prefix = min_steps, max_steps, prefix
        self.started = 0
        self.ended = 0
        self.live = [self._new() for _ in range(concurrent)]

    def _new(self) -> dict:
        n = int(self.rng.integers(self.min_steps, self.max_steps + 1))
        self.started += 1
        return {"run": f"{self.prefix}-{self.started:06d}", "steps": n, "step": 0,
                "spike": int(self.rng.integers(n // 2, n)), "floor": 0.1 + 0.1 * self.rng.random()}

    def batch(self, i: int, size: int, t0: float) -> tuple[str, list[dict], bool]:
        """The next ``size`` events of live run ``i`` (dicts without ``run``); True when the
        run ended with this batch (a new one took its place)."""
        r = self.live[i]
        s0 = r["step"] + 1
        s1 = min(r["steps"], s0 + size - 1)
        steps = np.arange(s0, s1 + 1)
        noise = self.rng.standard_normal((3, len(steps)))
        loss = (r["floor"] + 2.0 * np.exp(-steps / 300.0)) * (1 + 0.05 * noise[0])
        loss[steps == r["spike"]] *= 12
        acc = np.clip(1 - loss / 2.5 + 0.02 * noise[1], 0, 1)
        grad = np.exp(-steps / 500.0) + 0.05 * np.abs(noise[2])
        lr = 0.05 * 0.5 * (1 + np.cos(np.pi * steps / r["steps"]))
        ts = t0 + steps * 1.0  # one step a second: a day is 86,400 steps
        evs = [{"step": s, "ts": t, "kind": "train",
                "metrics": {"loss": a, "accuracy": b, "grad_norm": c, "lr": d}}
               for s, t, a, b, c, d in zip(steps.tolist(), ts.tolist(), loss.tolist(),
                                           acc.tolist(), grad.tolist(), lr.tolist(),
                                           strict=True)]
        r["step"] = s1
        ended = s1 >= r["steps"]
        if ended:
            evs.append({"step": s1, "ts": t0 + s1 + 0.5, "kind": "end", "metrics": {}})
            self.ended += 1
            self.live[i] = self._new()
        return r["run"], evs, ended
