"""Reference-set detectors: KNN distance, One-Class SVM and Isolation Forest.

KNN distances are exact, by brute force in numpy (a reference holds a few hundred
vectors); the One-Class SVM is fit by scikit-learn and its kernel sum scored in numpy;
Isolation Forest is scikit-learn's.

They score feature vectors against a sliding reference set: the univariate detectors use
shingles (the last ``shingle`` values of a series, on a log scale with ``log``); the
run-level :class:`MultivariateKNN` uses a run's metrics at one step. The model is refit on
a schedule (every ``refit_every`` new vectors; the step-vector rules also at most once
per ``refit_seconds`` of the run's time), never per event. Raw scores are calibrated
to 0..1 against the scores of the reference set itself (empirical CDF, with an exponential
tail past its maximum), so one threshold means the same for every series.

State holds the sliding reference and the snapshot the current model was fit on (numpy
arrays, written as base64 by detectors/state.py). The fitted model is a cache: after a
restart it is refit from the snapshot, which gives the same model (fixed seeds), so a
restored worker scores exactly as before.
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
        """A fit record: centre/scale of the features, the snapshot the model is fit on and
        the calibration scores (numpy arrays; see detectors/state.py for their encoding).

        KNN calibrates on the reference itself, leave-one-out; OCSVM and IForest are fit on
        every other reference vector and calibrated on the held-out half, since in-sample
        scores of those models are optimistic.
        """
        ref = np.asarray(ref, dtype=float)
        center = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - center), axis=0) * 1.4826
        scale = np.maximum(mad, 1e-3 * np.abs(center) + 1e-9)
        key = f"{self.kind}/{self.k}/{self.nu}/{self.trees}/{self.seed}/".encode()
        nonce = hashlib.sha1(key + ref.tobytes()).hexdigest()[:20]  # same snapshot, same model
        train = ref if self.kind == "knn" else ref[::2]
        fit = {"nonce": nonce, "ref": train.copy(), "center": center, "scale": scale}
        model = self._build(fit)
        _cache_put(nonce, model)
        if self.kind == "knn":
            raw = self._raw(model, (ref - center) / scale, self_included=True)
        else:
            raw = self._raw(model, (ref[1::2] - center) / scale, self_included=False)
        fit["calib"] = np.sort(raw)
        fit["iqr"] = calib_iqr(fit["calib"])
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
        if "iqr" not in fit:
            _as_arrays(fit)
        model = self.model(fit)
        z = (x - fit["center"]) / fit["scale"]
        raw = self._raw(model, z, self_included=False)
        return raw, calibrate(raw, fit["calib"], fit["iqr"])

    def _build(self, fit: dict):
        z = (fit["ref"] - fit["center"]) / fit["scale"]
        if self.kind == "knn":
            return z  # exact neighbours by brute force: a few hundred reference vectors
        if self.kind == "ocsvm":
            from sklearn.svm import OneClassSVM

            svm = OneClassSVM(nu=self.nu, gamma="scale").fit(z)
            # scored in numpy: Σα·exp(-γ‖x - sv‖²) is score_samples without its per-call
            # validation (checked equal to 1e-15 with scikit-learn 1.x)
            return svm.support_vectors_, svm.dual_coef_[0], float(svm._gamma)
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=self.trees, random_state=self.seed).fit(z)

    def _raw(self, model, z: np.ndarray, self_included: bool) -> np.ndarray:
        if self.kind == "knn":
            k = min(self.k + (1 if self_included else 0), len(model))
            d2 = _sq_distances(z, model)
            # k-th neighbour (the point itself excluded when fitted on)
            return np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
        if self.kind == "ocsvm":
            sv, coef, gamma = model
            # the kernel sum's -log behaves like a squared distance and, unlike the sum,
            # does not saturate far from the data
            # an elementwise product summed per row, not a BLAS matrix-vector product, whose
            # summation order (and so the last bits) would depend on how many rows are scored
            kernel_sum = (np.exp(-gamma * _sq_distances(z, sv)) * coef).sum(axis=1)
            return -np.log(np.maximum(kernel_sum, 1e-300))
        return -model.score_samples(z)  # higher score_samples = more normal


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b``: summed column by
    column, element by element (the same bits however the rows are batched, unlike a matrix
    product; 4x faster than one 3-d difference array)."""
    out = np.zeros((len(a), len(b)))
    for k in range(a.shape[1]):
        d = np.subtract.outer(a[:, k], b[:, k])
        d *= d
        out += d
    return out


def _as_arrays(fit: dict) -> None:
    """A fit record read from a state written before arrays (plain lists): in place."""
    for k in ("ref", "center", "scale", "calib"):
        fit[k] = np.asarray(fit[k], dtype=float)
    if "iqr" not in fit:
        fit["iqr"] = calib_iqr(fit["calib"])


def calib_iqr(calib: np.ndarray) -> float:
    """The scale of :func:`calibrate`'s tail: the calibration scores' inter-quartile range."""
    return max(float(np.subtract(*np.percentile(calib, [75, 25]))), 1e-9)


def calibrate(raw: np.ndarray, calib: np.ndarray, iqr: float | None = None) -> np.ndarray:
    """Empirical CDF of ``calib`` at ``raw``; past the maximum, an exponential tail whose
    scale is the inter-quartile range (``iqr``, computed if not given), so larger excesses
    keep scoring higher (→ 1)."""
    n = len(calib)
    pos = np.searchsorted(calib, raw, side="right")
    u = (pos + 0.5) / (n + 1)
    top = calib[-1]
    tail = raw > top
    if tail.any():
        if iqr is None:
            iqr = calib_iqr(calib)
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


class StepVectors:
    """One rank's metric values at each step of a batch: a step x metric matrix (NaN where
    an event lacks the metric), rows in stream order."""

    __slots__ = ("names", "steps", "ts", "matrix")

    def __init__(self, names: list[str], steps: np.ndarray, ts: np.ndarray,
                 matrix: np.ndarray):
        self.names, self.steps, self.ts, self.matrix = names, steps, ts, matrix

    def features(self, metrics: list[str], log: list[bool]) -> tuple[np.ndarray, np.ndarray]:
        """The rows whose ``metrics`` are all finite (log scale where ``log``), and their
        row numbers."""
        col = {m: j for j, m in enumerate(self.names)}
        x = np.full((len(self.steps), len(metrics)), np.nan)
        for i, m in enumerate(metrics):
            j = col.get(m)
            if j is not None:
                x[:, i] = self.matrix[:, j]
        lg = np.asarray(log, dtype=bool)
        if lg.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                sub = x[:, lg]
                x[:, lg] = np.where(sub > 0, np.log(sub), np.nan)
        rows = np.flatnonzero(np.isfinite(x).all(axis=1))
        return x[rows], rows

    def values_at(self, row: int) -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.names, self.matrix[row].tolist(), strict=True)}


def _fit_ts(rs: dict) -> float:
    """The run time of a rank's last fit (-inf in a state from before it was kept)."""
    t = rs.get("fit_ts")
    return -np.inf if t is None else t


_VECTORS: list = [None, None, None]  # (batch, (kinds, exclude), vectors): the last batch's


def step_vectors(batch: dict, kinds, exclude) -> dict[str, StepVectors]:
    """Per rank, the step vectors of ``kinds`` metrics not matching ``exclude`` in a batch;
    computed once per batch for all rules that ask the same (mvknn and mvocsvm)."""
    key = (tuple(kinds), tuple(exclude))
    if _VECTORS[0] is batch and _VECTORS[1] == key:
        return _VECTORS[2]
    by_rank: dict[str, list] = {}
    for s in batch.values():
        if s.kind in kinds and not any(fnmatch.fnmatchcase(s.metric.lower(), p)
                                       for p in exclude):
            by_rank.setdefault(s.rank, []).append(s)
    out = {}
    for rank, series in by_rank.items():
        seqs = np.unique(np.concatenate([s.seq for s in series]))
        matrix = np.full((len(seqs), len(series)), np.nan)
        steps = np.zeros(len(seqs), dtype=np.int64)
        ts = np.zeros(len(seqs))
        for j, s in enumerate(series):
            at = np.searchsorted(seqs, s.seq)
            matrix[at, j] = s.values
            steps[at], ts[at] = s.steps, s.ts
        out[rank] = StepVectors([s.metric for s in series], steps, ts, matrix)
    _VECTORS[:] = [batch, key, out]
    return out


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
                             "refit_seconds": constraints.NON_NEGATIVE,
                             "min_reference": constraints.POSITIVE_INT,
                             "threshold": constraints.UNIT,
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "k": constraints.POSITIVE_INT, "nu": constraints.UNIT,
                             "page": constraints.BOOL, "severity": constraints.SEVERITY}

    def __init__(self, kinds=("train",), exclude=("lr", "*learning_rate*"), min_metrics: int = 3,
                 reference: int = 256, refit_every: int = 128, refit_seconds: float = 1.0,
                 min_reference: int = 64, threshold: float = 0.9999, cooldown: int = 50,
                 k: int = 5, nu: float = 0.02, page: bool = True, severity: str = "warning"):
        self.kinds, self.exclude, self.min_metrics = kinds, exclude, min_metrics
        self.reference, self.refit_every = reference, refit_every
        self.refit_seconds = refit_seconds
        self.min_reference, self.threshold, self.cooldown = min_reference, threshold, cooldown
        self.page, self.severity = page, severity
        self.scorer = ReferenceScorer(self.kind, k=k, nu=nu)
        self.k = k

    def new_state(self) -> dict:
        return {"ranks": {}}

    def update(self, state, batch, scores: list | None = None):
        out: list[RuleFinding] = []
        for rank, sv in sorted(step_vectors(batch, self.kinds, self.exclude).items()):
            rs = state["ranks"].get(rank)
            if rs is None:
                first = sv.matrix[0]
                names = sorted(m for j, m in enumerate(sv.names) if np.isfinite(first[j]))
                if len(names) < self.min_metrics:
                    continue
                col = {m: j for j, m in enumerate(sv.names)}
                rs = state["ranks"][rank] = {
                    "metrics": names, "log": [bool(first[col[m]] > 0) for m in names],
                    "ref": np.empty((0, len(names))), "fit": None, "since": 0,
                    "fit_ts": None, "last_alert": None}
            x, keep = sv.features(rs["metrics"], rs["log"])
            self._score_rank(rs, rank, sv, keep, x, out, scores)
        return out

    def _score_rank(self, rs, rank, sv, rows, x, out, scores) -> None:
        """Score the rank's complete step vectors ``x`` (rows ``rows`` of ``sv``) and learn
        them into the sliding reference. The model is refit after ``refit_every`` new
        vectors once ``refit_seconds`` of the run's time have passed since the last fit, so
        a run logging hundreds of steps a second refits about once a second, not several
        times (the same vectors give the same refits however they are batched)."""
        pos, n = 0, len(rows)
        steps, ts = sv.steps[rows].tolist(), sv.ts[rows]
        ref = np.asarray(rs["ref"], dtype=float).reshape(-1, x.shape[1])
        while pos < n:
            fit = rs["fit"]
            if fit is None:  # learn until the reference is big enough
                take = min(max(self.min_reference - len(ref), 1), n - pos)
            elif rs["since"] < self.refit_every:  # score up to the next refit in one call
                take = min(self.refit_every - rs["since"], n - pos)
            else:  # due by count: up to the first vector past the time since the fit
                due = np.flatnonzero(ts[pos:] - _fit_ts(rs) >= self.refit_seconds)
                take = int(due[0]) + 1 if len(due) else n - pos
            seg = x[pos:pos + take]
            if fit is not None:
                raw, u = self.scorer.score(fit, seg)
                for i, rw, uu in zip(range(pos, pos + take), raw.tolist(), u.tolist(),
                                     strict=True):
                    step = steps[i]
                    if scores is not None:
                        scores.append(("step_vector", rank, step, float(ts[i]), self.name, uu))
                    if self.page and uu >= self.threshold and (
                            rs["last_alert"] is None or step - rs["last_alert"] > self.cooldown):
                        rs["last_alert"] = step
                        out.append(self._finding(rs, rank, sv, int(rows[i]), x[i], rw, uu))
                rs["since"] += take
            ref = np.concatenate((ref, seg))[-self.reference:]
            pos += take
            last_ts = float(ts[pos - 1])
            if (fit is None and len(ref) >= self.min_reference) or (
                    rs["since"] >= self.refit_every and
                    last_ts - _fit_ts(rs) >= self.refit_seconds):
                rs["fit"] = self.scorer.fit(ref)
                rs["since"], rs["fit_ts"] = 0, last_ts
        rs["ref"] = ref

    def attribution(self, rs, x) -> np.ndarray:
        """Per metric: how far the vector is from its nearest reference vectors, in robust
        standard units of that metric (what moved it away from normal)."""
        fit = rs["fit"]
        center, scale = fit["center"], fit["scale"]
        z = (x - center) / scale
        ref = (fit["ref"] - center) / scale
        d = np.sum((ref - z) ** 2, axis=1)
        nn = np.argsort(d)[:min(self.k, len(ref))]
        return np.abs(z - ref[nn].mean(axis=0))

    def _finding(self, rs, rank, sv, row, x, raw, u) -> RuleFinding:
        dev = self.attribution(rs, x)
        order = np.argsort(-dev)[:3]
        names = [rs["metrics"][j] for j in order]
        value = sv.values_at(row)
        top = names[0]
        parts = ", ".join(f"{m} {value[m]:.4g}" for m in names)
        what = "KNN distance" if self.kind == "knn" else "One-Class SVM score"
        step, ts = int(sv.steps[row]), float(sv.ts[row])
        return RuleFinding(top, rank, step, ts, float(value[top]), Finding(
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
