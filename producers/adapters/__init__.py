"""Framework adapters (optional extras): Keras, Hugging Face Transformers, PyTorch Lightning.

Each module imports its framework only when used::

    from telltale.producers.adapters.keras import TelltaleCallback
    from telltale.producers.adapters.hf import TelltaleTrainerCallback
    from telltale.producers.adapters.lightning import TelltaleLogger
"""

from __future__ import annotations

import numbers

RENAME = {"learning_rate": "lr"}


def split_metrics(logs: dict | None, skip: tuple[str, ...] = ("epoch", "step")
                  ) -> tuple[dict, dict]:
    """Numeric framework logs as (train, eval) metrics with Telltale names:
    ``learning_rate`` -> ``lr``, ``eval_x`` / ``val_x`` -> ``val_x`` (eval)."""
    train, ev = {}, {}
    for k, v in (logs or {}).items():
        if k in skip:
            continue
        if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        if k.startswith("eval_"):
            ev["val_" + k[5:]] = float(v)
        elif k.startswith("val_"):
            ev[k] = float(v)
        else:
            train[RENAME.get(k, k)] = float(v)
    return train, ev


def current_monitor(monitor):
    if monitor is not None:
        return monitor
    import telltale

    if telltale._current is None:
        raise RuntimeError("pass monitor=telltale.init(run=...) or call telltale.init first")
    return telltale._current
