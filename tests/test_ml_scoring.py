"""The KNN and One-Class SVM scores computed in numpy equal scikit-learn's, and the step
vectors a batch gives are the same for every batching."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors
from sklearn.svm import OneClassSVM

from telltale.detectors.ml import MultivariateKNN, MultivariateOCSVM, ReferenceScorer, step_vectors
from telltale.detectors.runrules import SeriesBatch


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
