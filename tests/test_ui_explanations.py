"""Every detector's explanation agrees with its alert's message: same direction, same numbers.

Each detector of the registry runs alone on a series made to trip it, through the real
embedded pipeline (step windows on, as in a demo), and its firing record's explanation is
checked against the record's own message and against what the series did.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from telltale.config import Config
from telltale.detectors.pipelines import REGISTRY, Pipelines
from telltale.schema import encode_batch
from telltale.sinks.memory import MemoryStore
from telltale.streams.embedded import EmbeddedPipeline
from telltale.streams.processor import RunProcessor

rng = np.random.default_rng(7)


def noise(n, mean=10.0, sd=0.1):
    return (mean + sd * rng.standard_normal(n)).tolist()


def spike(at=600, n=900, v=13.0):
    xs = noise(n)
    xs[at] = v
    return xs


def shift(at=600, n=900, before=10.0, after=20.0):
    return noise(at, before, 0.1) + noise(n - at, after, 0.1)


def errors(n=1400, at=1000):
    xs = [1.0 if rng.random() < 0.004 else 0.0 for _ in range(n)]
    for i in range(at, at + 100, 5):  # 20 errors in 100 requests
        xs[i] = 1.0
    return xs


def odd_stretch(n=900, at=700):  # a sine, then values it never took, alternating
    xs = [10 + math.sin(i / 5) + 0.05 * rng.standard_normal() for i in range(n)]
    for j in range(at, at + 8):
        xs[j] = 10 + 3 * ((j % 2) * 2 - 1)
    return xs


def diverging(n=700, at=400):
    xs = [2.0 * math.exp(-i / 80) + 0.3 + 0.01 * rng.standard_normal() for i in range(at)]
    base = xs[-1]
    return xs + [base * math.exp((i + 1) / 40) for i in range(n - at)]


def spikes(n=900, at=600):
    xs = noise(n, 1.0, 0.02)
    for i in range(at, at + 40, 10):
        xs[i] = 12.0
    return xs


# detector -> (kwargs, series, what the data did: "up", "down" or None)
CASES = {
    "nonfinite": ({}, spike(v=float("nan")), None),
    "zscore": ({}, spike(), "up"),
    "robustz": ({}, spike(v=7.0), "down"),
    "ewma": ({}, spike(), "up"),
    "pagehinkley": ({}, shift(after=8.0), "down"),
    "divergence": ({}, diverging(), "up"),
    "levelshift": ({}, shift(), "up"),
    "spikerate": ({}, spikes(), "up"),
    "jump": ({}, noise(600, 1e-3, 0) + noise(100, 0.5, 0), "up"),
    "growth": ({}, [1000.0 + 2.0 * i + rng.standard_normal() for i in range(600)], "up"),
    "plateau": ({"patience": 200}, noise(700, 1.0, 0.01), None),
    "range": ({"high": 0.5}, noise(300, 0.01, 0.001) + noise(20, 0.9, 0.01), "up"),
    "slo": ({"slo": 100.0}, noise(600, 50, 5) + noise(300, 150, 5), "up"),
    "p99": ({}, noise(1000, 50, 5) + noise(400, 150, 10), "up"),
    "errorburst": ({}, errors(), "up"),
    "drift": ({}, noise(1000, 0, 1) + noise(600, 3, 1), "up"),
    "knn": ({}, odd_stretch(), None),
    "ocsvm": ({}, odd_stretch(), None),
    "iforest": ({}, odd_stretch(), None),
    "likelihood": ({"dims": (2, 4), "history": 40, "learning": 40, "samples": 9,
                    "likelihood_history": 100, "reestimate": 15, "rest": 20, "threshold": 0.3},
                   noise(600, 10, 1) + [20.0] + noise(100, 10, 1), None),
}

OPPOSITE = {"up": ("below", "down", "falling", "fell", "faster", "lower", "decreased"),
            "down": ("above", "up", "rising", "rose", "grew", "slower", "higher", "increased")}
PAIRS = [("above", "below"), ("up", "down"), ("rising", "falling"), ("slower", "faster")]

NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")


def numbers(text: str) -> list[float]:
    out = []
    for m in NUM.findall(text):
        pct = m.endswith("%")
        v = float(m.rstrip("%"))
        out.append(v / 100 if pct else v)
    return out


def shared(a: list[float], b: list[float]) -> list[float]:
    def close(x, y):
        return math.isclose(x, y, rel_tol=6e-3, abs_tol=1e-12)

    return [x for x in a if any(close(x, y) for y in b)]


def straggler_events():
    out = []
    for s in range(1, 101):
        for r in range(4):
            v = 0.05 + 0.002 * rng.standard_normal() + (0.07 if r == 2 and s > 50 else 0)
            out.append({"step": s, "ts": 1000.0 + s, "kind": "train",
                        "metrics": {"step_time_s": v}, "tags": {"rank": r}})
    return out


def overfit_events():
    out = []
    for s in range(1, 401):
        out.append({"step": s, "ts": 1000.0 + s, "kind": "train",
                    "metrics": {"loss": 2.0 * math.exp(-s / 60) + 0.01}})
        if s % 20 == 0:
            val = 1.0 * math.exp(-s / 60) + 0.3 if s <= 160 else 0.35 + (s - 160) / 200
            out.append({"step": s, "ts": 1000.5 + s, "kind": "eval", "metrics": {"val_loss": val}})
    return out


def joint_events():  # three metrics that move together, once
    return [{"step": s, "ts": 1000.0 + s, "kind": "train", "metrics": {
        k: 1.0 + 0.01 * rng.standard_normal() + (0.5 if 600 <= s < 610 else 0)
        for k in ("a_x", "b_y", "c_z")}} for s in range(1, 801)]


def weights_events():  # the weight norm drops 20% in one step, the update was 1%
    out, pn = [], 10.0
    for s in range(1, 401):
        pn *= 1 + 0.005 * rng.random() if s != 300 else 0.8
        out.append({"step": s, "ts": 1000.0 + s, "kind": "train",
                    "metrics": {"param_norm": pn, "update_ratio": 0.01}})
    return out


# run-level rules -> (events, what the data did)
RULE_CASES = {"straggler": (straggler_events(), "up"),
              "overfit": (overfit_events(), None),  # val up while train falls: both said
              "mvknn": (joint_events(), None),
              "mvocsvm": (joint_events(), None),
              "weights": (weights_events(), "down")}


def run_events(events, pipelines: Pipelines) -> list[dict]:
    cfg = Config(windows=("step:50",))
    store = MemoryStore()
    pipe = EmbeddedPipeline(cfg, store)
    pipe.processor = RunProcessor(cfg, pipelines)
    for i in range(0, len(events), 97):  # in batches, as a producer sends them
        pipe.handle("r", encode_batch("r", events[i:i + 97]))
    pipe.close()
    return store.alerts["r"]


def firing_record(detector: str) -> dict:
    if detector in RULE_CASES:
        alerts = run_events(RULE_CASES[detector][0], Pipelines([("*", [])],
                                                               run_rules=[(detector, {})]))
    else:
        kw, values, _ = CASES[detector]
        metric = f"x_{detector}"
        alerts = run_events([{"step": s, "ts": 1000.0 + s, "kind": "train",
                              "metrics": {metric: v}} for s, v in enumerate(values, 1)],
                            Pipelines([(metric, [(detector, kw)])], run_rules=[]))
    recs = [a for a in alerts if a["detector"] == detector and a["state"] == "firing"]
    assert recs, f"{detector} did not fire on its test series"
    return recs[0]


def test_every_registered_detector_has_a_case():
    from telltale.detectors.pipelines import _run_rule_registry

    assert set(CASES) == set(REGISTRY) and set(RULE_CASES) == set(_run_rule_registry())


@pytest.mark.parametrize("detector", sorted(CASES) + sorted(RULE_CASES))
def test_explanation_agrees_with_the_alert_message(detector):
    a = firing_record(detector)
    msg, ex = a["message"], a["explanation"]
    low = ex.lower()
    print(f"{detector}\n  message:     {msg}\n  explanation: {ex}")
    # numbers: the explanation restates the message's own figures (not a window's σ)
    nm = [x for x in numbers(msg) if x != a["step"]]
    common = shared(nm, numbers(ex))
    assert len(common) >= min(2, len(nm)), (msg, ex)
    # direction: nothing opposite to the message's words ...
    for w1, w2 in PAIRS:
        for said, other in ((w1, w2), (w2, w1)):
            if re.search(rf"\b{said}\b", msg) and not re.search(rf"\b{said}\b|\b{other}\b",
                                                                   msg.replace(said, "")):
                assert not re.search(rf"\b{other}\b", low), (msg, ex)
    # ... nor to what the series did
    truth = CASES[detector][2] if detector in CASES else RULE_CASES[detector][1]
    if truth:
        assert not any(re.search(rf"\b{w}\b", low) for w in OPPOSITE[truth]), (truth, ex)
