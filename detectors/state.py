"""Run states as text: JSON in which numpy arrays travel as base64 of their bytes.

Detector and run-rule states are plain dicts and lists, except for large numeric blocks
(a reference set, a fitted model's snapshot), which stay numpy arrays in memory: scoring
uses them without converting lists, and the checkpoint encodes them as bytes instead of
one decimal per float (what made state writes the worker's second-largest cost). The bits
round-trip exactly, so a restored worker scores exactly as before.

>>> import numpy as np
>>> st = {"ref": np.array([[1.0, 2.5], [np.nan, -0.1]]), "since": 3}
>>> back = load_state(dump_state(st))
>>> back["since"], back["ref"].shape, bool(np.array_equal(back["ref"], st["ref"], equal_nan=True))
(3, (2, 2), True)
"""

from __future__ import annotations

import base64
import json

import numpy as np

_KEY = "__ndarray__"


def _default(obj):
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {_KEY: base64.b64encode(a.tobytes()).decode("ascii"),
                "dtype": a.dtype.str, "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"a run state cannot hold {type(obj).__name__}")


def _hook(d: dict):
    if _KEY in d:
        a = np.frombuffer(base64.b64decode(d[_KEY]), dtype=np.dtype(d["dtype"]))
        return a.reshape(d["shape"]).copy()  # writable, owns its memory
    return d


def dump_state(state) -> str:
    """A run state as JSON text (non-finite floats as bare tokens, arrays as base64)."""
    return json.dumps(state, separators=(",", ":"), allow_nan=True, default=_default)


def load_state(text: str | bytes):
    """The state :func:`dump_state` wrote (older states with plain lists load as they are)."""
    return json.loads(text, object_hook=_hook)
