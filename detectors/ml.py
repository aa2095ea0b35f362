"""scikit-learn detectors: KNN distance, One-Class SVM and Isolation Forest.

They score feature vectors against a sliding reference set: the univariate detectors use
shingles (the last ``shingle`` values of a series, on a log scale with ``log``); the
run-level :class:`MultivariateKNN` uses a run's metrics at one step. The model is refit on
a schedule (every ``refit_every`` new vectors), never per event. Raw scores are calibrated
to 0..1 against the scores of the reference set itself (empirical CDF, with an exponential
tail past its maximum), so one threshold means the same for every series.

State holds the sliding reference and the snapshot the current model was fit on (both
plain lists). The fitted model is a cache: after a restart it is refit from the snapshot,
which gives the same model (fixed seeds), so a restored worker scores exactly as before.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import OrderedDict

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, UnitScored, score_over
from telltale.detectors.runrules import RuleFinding, RunRule

_MODELS: OrderedDict = OrderedDict()  # (fit nonce) -> fitted model; bounded LRU
_MAX_MODELS = 256  # ~30 kB each: ~8 MB; a missing model is rebuilt from its snapshot


def _cache_put(nonce: str, model) -> None:
    """Keep a fitted model, dropping the least recently used beyond ``_MAX_MODELS``."""
    _MODELS[nonce] = model
    _MODELS.move_to_end(nonce)
    while len(_MODELS) > _MAX_MODELS:
        _MODELS.popitem(last=False)


class ReferenceScorer:
    """Fit/score/calibrate one kind of model on a reference matrix (stateless helper)."""

    kind = "knn"

    def __init__(self, kind: str = "knn", k: int = 5, nu: float = 0.02, trees: int = 64,
                 seed: int = 0):
        if kind not in ("knn", "ocsvm", "iforest"):
            raise ValueError(f"unknown model kind {kind!r}")
        self.kind, self.k, self.nu, self.trees, self.seed = kind, k, nu, trees, seed

    def fit(self, ref: np.ndarray) -> dict:
        """A fit record (JSON-able): centre/scale of the features and calibration scores.

        KNN calibrates on the reference itself, leave-one-out; OCSVM and IForest are fit on
        every other reference vector and calibrated on the held-out half, since in-sample
        scores of those models are optimistic.
        """
        center = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - center), axis=0) * 1.4826
        scale = np.maximum(mad, 1e-3 * np.abs(center) + 1e-9)
        key = f"{self.kind}/{self.k}/{self.nu}/{self.trees}/{self.seed}/".encode()
        nonce = hashlib.sha1(key + ref.tobytes()).hexdigest()[:20]  # same snapshot, same model
        train = ref if self.kind == "knn" else ref[::2]
        fit = {"nonce": nonce, "ref": train.tolist(), "center": center.tolist(),
               "scale": scale.tolist()}
        model = self._build(fit)
        _cache_put(nonce, model)
        if self.kind == "knn":
            raw = self._raw(model, (ref - center) / scale, self_included=True)
        else:
            raw = self._raw(model, (ref[1::2] - center) / scale, self_included=False)
        fit["calib"] = np.sort(raw).tolist()
        return fit

    def model(self, fit: dict):
        m = _MODELS.get(fit["nonce"])
        if m is None:
            m = self._build(fit)
            _cache_put(fit["nonce"], m)
        else:
            _MODELS.move_to_end(fit["nonce"])
        return m

    def score(self, fit: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (higher = more anomalous) and calibrated scores in 0..1."""
        z = (x - np.asarray(fit["center"])) / np.asarray(fit["scale"])
        raw = self._raw(self.model(fit), z, self_included=False)
        return raw, calibrate(raw, np.asarray(fit["calib"]))

    def _build(self, fit: dict):
        ref = np.asarray(fit["ref"], dtype=float)
        z = (ref - np.asarray(fit["center"])) / np.asarray(fit["scale"])
        if self.kind == "knn":
            from sklearn.neighbors import NearestNeighbors

            return NearestNeighbors(n_neighbors=min(self.k + 1, len(z)),
                                    algorithm="kd_tree").fit(z)
        if self.kind == "ocsvm":
            from sklearn.svm import OneClassSVM

            return OneClassSVM(nu=self.nu, gamma="scale").fit(z)
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=self.trees, random_state=self.seed).fit(z)

    def _raw(self, model, z: np.ndarray, self_included: bool) -> np.ndarray:
        if self.kind == "knn":
            n_fit = model.n_samples_fit_
            k = min(self.k + (1 if self_included else 0), n_fit)
            dist, _ = model.kneighbors(z, n_neighbors=k)
            return dist[:, -1]  # k-th neighbour (the point itself excluded when fitted on)
        if self.kind == "ocsvm":
            # score_samples is the kernel sum Σα·exp(-γ‖x - sv‖²): its -log behaves like a
            # squared distance and, unlike the sum, does not saturate far from the data
            return -np.log(np.maximum(model.score_samples(z), 1e-300))
        return -model.score_samples(z)  # higher score_samples = more normal


def calibrate(raw: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Empirical CDF of ``calib`` at ``raw``; past the maximum, an exponential tail whose
    scale is the inter-quartile range, so larger excesses keep scoring higher (→ 1)."""
    n = len(calib)
    pos = np.searchsorted(calib, raw, side="right")
    u = (pos + 0.5) / (n + 1)
    top = calib[-1]
    iqr = max(float(np.subtract(*np.percentile(calib, [75, 25]))), 1e-9)
    tail = raw > top
    if tail.any():
        u_top = (n + 0.5) / (n + 1)
        u[tail] = 1 - (1 - u_top) * np.exp(-(raw[tail] - top) / iqr)
    return u


class ShingleModel(UnitScored, Detector):
    """Base of the univariate scikit-learn detectors (see the module docstring)."""

    kind = "knn"
    parameter_constraints = {"shingle": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT,
                             "refit_every": constraints.POSITIVE_INT,
                             "min_reference": constraints.POSITIVE_INT,
                             "threshold": constraints.UNIT, "log": constraints.BOOL,
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY, "k": constraints.POSITIVE_INT,
                             "nu": constraints.UNIT, "trees": constraints.POSITIVE_INT,
                             "seed": constraints.NON_NEGATIVE_INT}

    def abnormal(self, values, scores):
        """Still past the calibrated 99th percentile of the reference."""
        return score_over(scores, 0.99, 1.0)

    def __init__(self, shingle: int = 8, reference: int = 256, refit_every: int = 128,
                 min_reference: int = 64, threshold: float = 0.9999, log: bool = False,
                 cooldown: int = 50, severity: str = "warning", **model_kw):
        self.shingle, self.reference, self.refit_every = shingle, reference, refit_every
        self.min_reference, self.threshold, self.log = min_reference, threshold, log
        self.cooldown, self.severity = cooldown, severity
        self.scorer = ReferenceScorer(self.kind, **model_kw)

    def new_state(self) -> dict:
        return {"tail": [], "ref": [], "fit": None, "since": 0, "last_alert": None}

    def update(self, state, steps, values):
        x = np.asarray(values, dtype=float)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(x > 0, np.log(x), np.nan)
        idx = np.flatnonzero(np.isfinite(x))
        scores = np.full(len(values), np.nan)
        findings: list[Finding] = []
        if not len(idx):
            return scores, findings
        m = self.shingle
        seq = np.concatenate((np.asarray(state["tail"], dtype=float), x[idx]))
        n_new = len(seq) - (m - 1)
        if n_new <= 0:
            state["tail"] = seq.tolist()
            return scores, findings
        feats = np.lib.stride_tricks.sliding_window_view(seq, m)[-n_new:]
        owners = idx[len(idx) - n_new:]  # the value that completes each shingle
        state["tail"] = seq[-(m - 1):].tolist() if m > 1 else []
        pos = 0
        while pos < n_new:
            fit = state["fit"]
            if fit is None:
                # no model yet: learn until the reference is big enough, then fit
                need = self.min_reference - len(state["ref"])
                take = min(max(need, 0), n_new - pos)
                self._learn(state, feats[pos:pos + take])
                pos += take
                if len(state["ref"]) >= self.min_reference:
                    self._refit(state)
                continue
            take = min(self.refit_every - state["since"], n_new - pos)
            seg = feats[pos:pos + take]
            raw, u = self.scorer.score(fit, seg)
            scores[owners[pos:pos + take]] = u
            self._find(state, steps, values, owners[pos:pos + take], raw, u, findings)
            self._learn(state, seg)
            state["since"] += take
            pos += take
            if state["since"] >= self.refit_every:
                self._refit(state)
        return scores, findings

    def _learn(self, state, seg: np.ndarray) -> None:
        if len(seg):
            ref = state["ref"]
            ref.extend(seg.tolist())
            if len(ref) > self.reference:
                del ref[:len(ref) - self.reference]

    def _refit(self, state) -> None:
        state["fit"] = self.scorer.fit(np.asarray(state["ref"], dtype=float))
        state["since"] = 0

    def _find(self, state, steps, values, owners, raw, u, findings) -> None:
        hits = np.flatnonzero(u >= self.threshold)
        last = state["last_alert"]
        for j in hits.tolist():
            i = int(owners[j])
            step = int(steps[i])
            if last is not None and step - last <= self.cooldown:
                continue
            last = step
            findings.append(Finding(
                i, self.name, self.severity, float(u[j]),
                f"{float(values[i]):.6g}: the last {self.shingle} values are unlike the "
                f"{len(state['fit']['ref'])} windows before them ({self.kind} score "
                f"{raw[j]:.3g}, calibrated {u[j]:.4f})",
                {"raw": float(raw[j]), "calibrated": float(u[j])}))
        state["last_alert"] = last


class KNNDistance(ShingleModel):
    """k-th nearest-neighbour distance of the value's shingle to the reference shingles.

    >>> det = KNNDistance(shingle=4, reference=64, refit_every=32, min_reference=32)
    >>> values = np.sin(np.arange(120) / 3)
    >>> values[100] = 4.0
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, round(f.score, 3)) for f in findings]
    [(100, 1.0)]
    """

    name = "knn"
    kind = "knn"


class OneClassSVMDetector(ShingleModel):
    """One-Class SVM (RBF) decision score of the shingle.

    >>> det = OneClassSVMDetector(shingle=4, reference=64, refit_every=32, min_reference=32)
    >>> values = np.sin(np.arange(120) / 3)
    >>> values[100] = 4.0
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, round(f.score, 3)) for f in findings]
    [(100, 1.0)]
    """

    name = "ocsvm"
    kind = "ocsvm"


class IsolationForestDetector(ShingleModel):
    """Isolation Forest anomaly score of the shingle.

    >>> det = IsolationForestDetector(shingle=4, reference=64, refit_every=32, min_reference=32,
    ...                               threshold=0.99)
    >>> values = np.sin(np.arange(160) / 3)
    >>> values[140] = 10.0
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, round(f.score, 3)) for f in findings]
    [(141, 0.992)]
    """

    name = "iforest"
    kind = "iforest"


class MultivariateKNN(UnitScored, RunRule):
    """KNN distance of a rank's vector of ``kinds`` metrics at one step (log scale for
    positive metrics) to a sliding reference of earlier steps, calibrated to 0..1; names the
    metrics that differ most from the nearest neighbours (a per-metric attribution).

    Every scored step's calibrated score goes to the run's ``scores`` (InfluxDB, the page);
    it pages only with ``page=True`` (validation showed no recall it adds at the precision
    target: bench/quality.py).

    >>> from telltale.detectors.runrules import SeriesBatch
    >>> steps = np.arange(1, 81)
    >>> wave = {m: 1 + np.sin(steps / 4 + k) / 2
    ...         for k, m in enumerate(("loss", "grad_norm", "acc"))}
    >>> wave["loss"][70] = 5.0
    >>> batch = {m: SeriesBatch(m, "0", "train", steps, steps * 1.0, v, steps)
    ...          for m, v in wave.items()}
    >>> rule = MultivariateKNN(reference=32, refit_every=16, min_reference=32)
    >>> [(f.metric, f.step) for f in rule.update(rule.new_state(), batch)]
    [('loss', 71)]
    """

    name = "mvknn"
    kind = "knn"
    parameter_constraints = {"min_metrics": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT,
                             "refit_every": constraints.POSITIVE_INT,
                             "min_reference": constraints.POSITIVE_INT,
                             "threshold": constraints.UNIT,
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "k": constraints.POSITIVE_INT, "nu": constraints.UNIT,
                             "page": constraints.BOOL, "severity": constraints.SEVERITY}

    def __init__(self, kinds=("train",), exclude=("lr", "*learning_rate*"), min_metrics: int = 3,
                 reference: int = 256, refit_every: int = 128, min_reference: int = 64,
                 threshold: float = 0.9999, cooldown: int = 50, k: int = 5, nu: float = 0.02,
                 page: bool = True, severity: str = "warning"):
        self.kinds, self.exclude, self.min_metrics = kinds, exclude, min_metrics
        self.reference, self.refit_every = reference, refit_every
        self.min_reference, self.threshold, self.cooldown = min_reference, threshold, cooldown
        self.page, self.severity = page, severity
        self.scorer = ReferenceScorer(self.kind, k=k, nu=nu)
        self.k = k

    def new_state(self) -> dict:
        return {"ranks": {}}

    def update(self, state, batch, scores: list | None = None):
        rows: dict[tuple[str, int], dict] = {}
        for s in batch.values():
            if s.kind not in self.kinds or any(fnmatch.fnmatchcase(s.metric.lower(), p)
                                               for p in self.exclude):
                continue
            for q, st, v, t in zip(s.seq.tolist(), s.steps.tolist(), s.values.tolist(),
                                   s.ts.tolist(), strict=True):
                r = rows.setdefault((s.rank, q), {"step": st, "ts": t, "v": {}})
                r["v"][s.metric] = v
        by_rank: dict[str, list] = {}
        for (rank, _q), r in sorted(rows.items(), key=lambda kv: kv[0][1]):
            by_rank.setdefault(rank, []).append(r)
        out: list[RuleFinding] = []
        for rank, rlist in sorted(by_rank.items()):
            rs = state["ranks"].get(rank)
            if rs is None:
                names = sorted(m for m, v in rlist[0]["v"].items() if np.isfinite(v))
                if len(names) < self.min_metrics:
                    continue
                rs = state["ranks"][rank] = {
                    "metrics": names, "log": [bool(rlist[0]["v"][m] > 0) for m in names],
                    "ref": [], "fit": None, "since": 0, "last_alert": None}
            vecs = []
            for r in rlist:
                vec = [r["v"].get(m, np.nan) for m in rs["metrics"]]
                x = np.array([np.log(v) if lg and v > 0 else (np.nan if lg else v)
                              for v, lg in zip(vec, rs["log"], strict=True)])
                if np.isfinite(x).all():
                    vecs.append((r, x))
            self._score_rank(rs, rank, vecs, out, scores)
        return out

    def _score_rank(self, rs, rank, vecs, out, scores) -> None:
        pos = 0
        while pos < len(vecs):
            fit = rs["fit"]
            if fit is None:  # learn until the reference is big enough
                take = min(max(self.min_reference - len(rs["ref"]), 1), len(vecs) - pos)
            else:  # score up to the next refit in one call
                take = min(self.refit_every - rs["since"], len(vecs) - pos)
            seg = vecs[pos:pos + take]
            if fit is not None:
                raw, u = self.scorer.score(fit, np.vstack([x for _, x in seg]))
                for (r, x), rw, uu in zip(seg, raw.tolist(), u.tolist(), strict=True):
                    if scores is not None:
                        scores.append(("step_vector", rank, r["step"], r["ts"], self.name, uu))
                    step = r["step"]
                    if self.page and uu >= self.threshold and (
                            rs["last_alert"] is None or step - rs["last_alert"] > self.cooldown):
                        rs["last_alert"] = step
                        out.append(self._finding(rs, rank, r, x, rw, uu))
                rs["since"] += take
            rs["ref"].extend(x.tolist() for _, x in seg)
            if len(rs["ref"]) > self.reference:
                del rs["ref"][:len(rs["ref"]) - self.reference]
            pos += take
            if (fit is None and len(rs["ref"]) >= self.min_reference) or \
                    rs["since"] >= self.refit_every:
                rs["fit"] = self.scorer.fit(np.asarray(rs["ref"]))
                rs["since"] = 0

    def attribution(self, rs, x) -> np.ndarray:
        """Per metric: how far the vector is from its nearest reference vectors, in robust
        standard units of that metric (what moved it away from normal)."""
        fit = rs["fit"]
        center, scale = np.asarray(fit["center"]), np.asarray(fit["scale"])
        z = (x - center) / scale
        ref = (np.asarray(fit["ref"]) - center) / scale
        d = np.sum((ref - z) ** 2, axis=1)
        nn = np.argsort(d)[:min(self.k, len(ref))]
        return np.abs(z - ref[nn].mean(axis=0))

    def _finding(self, rs, rank, r, x, raw, u) -> RuleFinding:
        dev = self.attribution(rs, x)
        order = np.argsort(-dev)[:3]
        names = [rs["metrics"][j] for j in order]
        top = names[0]
        parts = ", ".join(f"{rs['metrics'][j]} {r['v'][rs['metrics'][j]]:.4g}" for j in order)
        what = "KNN distance" if self.kind == "knn" else "One-Class SVM score"
        return RuleFinding(top, rank, r["step"], r["ts"], float(r["v"][top]), Finding(
            0, self.name, self.severity, float(u),
            f"the run's metrics at this step are unlike the {len(rs['fit']['ref'])} steps "
            f"before ({what} {raw:.3g}, calibrated {u:.4f}); most different: {parts}",
            {"raw": float(raw), "calibrated": float(u),
             "deviation": {rs["metrics"][j]: float(dev[j]) for j in order}},
            contributors=names))


class MultivariateOCSVM(MultivariateKNN):
    """The same step vectors scored by a One-Class SVM (RBF) instead of KNN distance.

    >>> from telltale.detectors.runrules import SeriesBatch
    >>> steps = np.arange(1, 101)
    >>> wave = {m: 1 + np.sin(steps / 4 + k) / 2
    ...         for k, m in enumerate(("loss", "grad_norm", "acc"))}
    >>> wave["acc"][90] = 5.0
    >>> batch = {m: SeriesBatch(m, "0", "train", steps, steps * 1.0, v, steps)
    ...          for m, v in wave.items()}
    >>> rule = MultivariateOCSVM(reference=32, refit_every=16, min_reference=32)
    >>> [(f.metric, f.step) for f in rule.update(rule.new_state(), batch)]
    [('acc', 91)]
    """

    name = "mvocsvm"
    kind = "ocsvm"
