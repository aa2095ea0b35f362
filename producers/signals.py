"""Flush every monitor when the process gets SIGTERM, then let the previous handler act."""

from __future__ import annotations

import os
import signal
import threading

_installed = False
_after: list = []  # called after the monitors are flushed (the embedded pipeline process)


def after_flush(fn) -> None:
    """Have ``fn()`` called on SIGTERM after every monitor has been flushed."""
    _after.append(fn)


def flush_on_sigterm(timeout: float = 3.0) -> bool:
    """Install the handler once (main thread only); False when it cannot be installed."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        from telltale.producers.client import _close_all

        _close_all(timeout=timeout)  # unsent events go to the spool
        for fn in _after:
            try:
                fn()
            except Exception:  # the process must still end as SIGTERM asks
                pass
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # default: die of SIGTERM, as without us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True
    return True
