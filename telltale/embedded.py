"""Alert lines for people, and the process-wide embedded driver ``telltale.init`` uses when
no broker is set."""

from __future__ import annotations

import atexit
import sys
import threading

from telltale.config import Config

_lock = threading.Lock()
_driver = None


def format_alert(a: dict, verbose: bool = False) -> str:
    """One line per alert record (``verbose``: plus explanation, cause and next step)."""
    rank = f" rank {a['rank']}" if a.get("rank", "0") != "0" else ""
    state = a.get("state", "firing")
    tag = {"firing": "FIRING", "updated": "UPDATE", "resolved": "OK"}.get(state, state.upper())
    sev = a.get("severity", "?").upper()
    line = f"[{sev:8}] {tag:6} {a['run']}{rank} step {a['step']}: {a['message']}"
    if verbose and state != "resolved":
        for label in ("explanation", "cause", "action"):
            if a.get(label):
                line += f"\n      {label}: {a[label]}"
    return line


def shared_driver(cfg: Config):
    """One embedded driver per process (store ``cfg.store_dir``, alerts on stderr and to
    ``cfg.notify_config``'s handlers), closed at exit."""
    global _driver
    with _lock:
        if _driver is None:
            from telltale.sinks.local import LocalStore
            from telltale.streams.embedded import EmbeddedDriver

            _driver = EmbeddedDriver(
                cfg, LocalStore(cfg.store_dir), notify=True,
                on_alert=lambda a: print("telltale: " + format_alert(a, verbose=True),
                                         file=sys.stderr))
            atexit.register(_close_at_exit)
        return _driver


def _close_at_exit() -> None:
    from telltale.producers.client import _close_all

    _close_all()  # monitors first, so their last batches reach the pipeline
    if _driver is not None:
        _driver.close()
