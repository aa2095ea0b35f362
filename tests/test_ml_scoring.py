"""The KNN and One-Class SVM scores computed in numpy equal scikit-learn's, and the step
vectors a batch gives are the same for every batching."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors
from sklearn.svm import OneClassSVM

from telltale.detectors.ml import MultivariateKNN, MultivariateOCSVM, ReferenceScorer, step_vectors
from telltale.detectors.runrules import SeriesBatch
from telltale.detectors.state import dump_state, load_state


def test_knn_distance_is_scikit_learns_kth_neighbour():
    rng = np.random.default_rng(3)
    ref, x = rng.normal(size=(200, 6)), rng.normal(size=(40, 6)) * 2
    scorer = ReferenceScorer("knn", k=5)
    fit = scorer.fit(ref)
    raw, _ = scorer.score(fit, x)
    z = (ref - fit["center"]) / np.asarray(fit["scale"])
    zx = (x - fit["center"]) / np.asarray(fit["scale"])
    dist, _ = NearestNeighbors(n_neighbors=5).fit(z).kneighbors(zx)
    np.testing.assert_allclose(raw, dist[:, -1], rtol=1e-12)


def test_ocsvm_score_is_scikit_learns_score_samples():
    rng = np.random.default_rng(4)
    ref, x = rng.normal(size=(256, 5)), rng.normal(size=(50, 5)) * 1.5
    scorer = ReferenceScorer("ocsvm", nu=0.02)
    fit = scorer.fit(ref)
    raw, u = scorer.score(fit, x)
    center, scale = np.asarray(fit["center"]), np.asarray(fit["scale"])
    svm = OneClassSVM(nu=0.02, gamma="scale").fit((ref[::2] - center) / scale)
    want = -np.log(np.maximum(svm.score_samples((x - center) / scale), 1e-300))
    np.testing.assert_allclose(raw, want, rtol=1e-10)
    assert ((0 <= u) & (u <= 1)).all()


def _batches(split: int):
    """Two ranks, four metrics (one sometimes missing), 300 steps, cut every ``split``."""
    rng = np.random.default_rng(5)
    values = {m: rng.lognormal(0, 0.2, 300) for m in ("loss", "grad_norm", "acc", "tps")}
    missing = rng.random(300) < 0.1
    for lo in range(0, 300, split):
        batch = {}
        for rank in ("0", "1"):
            for m, v in values.items():
                idx = np.arange(lo, min(lo + split, 300))
                if m == "tps":
                    idx = idx[~missing[idx]]
                batch[f"{m}|{rank}"] = SeriesBatch(
                    m, rank, "train", idx.astype(np.int64), idx * 0.5, v[idx] * (1 + int(rank)),
                    (idx - lo) * 2 + int(rank))
        yield batch


def test_step_vectors_hold_each_steps_values():
    batch = next(_batches(300))
    sv = step_vectors(batch, ("train",), ())
    assert sorted(sv) == ["0", "1"]
    one = sv["1"]
    assert one.steps.tolist() == list(range(300))
    row = 17
    assert one.values_at(row)["loss"] == batch["loss|1"].values[row]
    x, rows = one.features(["acc", "loss", "tps"], [True, True, False])
    assert len(rows) == len(batch["tps|1"].steps)  # steps without tps are not complete
    np.testing.assert_allclose(x[:, 0], np.log(batch["acc|1"].values[rows]))


@pytest.mark.parametrize("rule_class", [MultivariateKNN, MultivariateOCSVM])
def test_scores_do_not_depend_on_batching(rule_class):
    outs = []
    for split in (300, 37, 5):  # equal to the last bit (rows of a matrix product are not)
        rule, rows = rule_class(min_reference=32, refit_every=16), []
        state = rule.new_state()
        for batch in _batches(split):
            rule.update(state, batch, rows)
        outs.append(sorted(rows))  # rows come rank by rank within a batch
    assert len(outs[0]) > 400
    assert outs[0] == outs[1] == outs[2]


def _fast_batches(split: int, n: int = 3000, dt: float = 0.002):
    """One rank logging a step every ``dt`` s (500 steps/s), cut every ``split`` steps."""
    rng = np.random.default_rng(6)
    values = {m: rng.lognormal(0, 0.2, n) for m in ("loss", "grad_norm", "acc")}
    for lo in range(0, n, split):
        idx = np.arange(lo, min(lo + split, n))
        yield {f"{m}|0": SeriesBatch(m, "0", "train", idx.astype(np.int64), 1e9 + idx * dt,
                                     v[idx], idx - lo) for m, v in values.items()}


@pytest.mark.parametrize("rule_class", [MultivariateKNN, MultivariateOCSVM])
def test_a_fast_run_refits_once_per_refit_seconds_however_batched(rule_class, monkeypatch):
    fits: dict[int, list] = {}
    outs = []
    for split in (3000, 113, 7):
        rule, rows = rule_class(), []
        real_fit = rule.scorer.fit
        monkeypatch.setattr(rule.scorer, "fit", lambda ref, _f=real_fit, _s=split:
                            fits.setdefault(_s, []).append(len(ref)) or _f(ref))
        state = rule.new_state()
        for batch in _fast_batches(split):
            rule.update(state, batch, rows)
        outs.append(sorted(rows))
    # 3,000 steps in 6 s of run time: the first fit at 64 vectors, then one a second
    # (not one every 128 vectors: 22 fits)
    assert len(fits[3000]) == 6
    assert fits[3000] == fits[113] == fits[7]
    assert outs[0] == outs[1] == outs[2]
    assert len(outs[0]) == 3000 - 64


def test_a_state_written_before_arrays_scores_as_before():
    """States stored by the previous version hold plain lists; they resume unchanged."""
    batches = list(_batches(60))
    rule = MultivariateKNN(min_reference=32, refit_every=16)
    state = rule.new_state()
    for batch in batches[:3]:
        rule.update(state, batch)
    as_lists = load_state(dump_state(state))
    for rs in as_lists["ranks"].values():
        rs["ref"] = rs["ref"].tolist()
        rs["fit"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                     for k, v in rs["fit"].items() if k != "iqr"}
        del rs["fit_ts"]
    a, b = [], []
    for batch in batches[3:]:
        rule.update(state, batch, a)
        rule.update(as_lists, batch, b)
    assert len(a) > 100 and a == b
