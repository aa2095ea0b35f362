"""The process-wide embedded pipeline that ``telltale.init`` uses when no broker is set."""

from __future__ import annotations

import atexit
import sys
import threading

from telltale.config import Config

_lock = threading.Lock()
_pipeline = None


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


def embedded_notifier(cfg: Config, store=None, path: str | None = None):
    """The in-process notifier when a notify config is set (TELLTALE_NOTIFY_CONFIG)."""
    path = path or cfg.notify_config
    if not path:
        return None
    import os

    from telltale.sinks.handlers import FileSilences, NotifyConfig
    from telltale.sinks.notify import BackgroundNotifier

    return BackgroundNotifier(NotifyConfig.load(path),
                              FileSilences(os.path.join(cfg.store_dir, "silences.json")), store)


def shared_pipeline(cfg: Config):
    """One embedded pipeline per process, closed at exit."""
    global _pipeline
    with _lock:
        if _pipeline is None:
            from telltale.sinks.local import LocalStore
            from telltale.streams.embedded import EmbeddedPipeline

            store = LocalStore(cfg.store_dir)
            notifier = embedded_notifier(cfg, store)

            def on_alert(a):
                print("telltale: " + format_alert(a, verbose=True), file=sys.stderr)
                if notifier is not None:
                    notifier.submit(a)  # never blocks: delivery runs on its own thread

            _pipeline = EmbeddedPipeline(cfg, store, on_alert=on_alert)
            _pipeline.notifier = notifier
            atexit.register(_close_at_exit)
        return _pipeline


def _close_at_exit() -> None:
    from telltale.producers.client import _close_all

    _close_all()  # monitors first, so their last batches reach the pipeline
    if _pipeline is not None:
        _pipeline.close()
        if getattr(_pipeline, "notifier", None) is not None:
            _pipeline.notifier.close()
