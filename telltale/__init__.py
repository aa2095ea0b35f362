"""Telltale: real-time anomaly detection for model training and inference.

    import telltale
    with telltale.init(run="exp-1", tags={"model": "mlp"}) as mon:
        telltale.watch(model, every=50)
        for i in range(steps):
            mon.log({"loss": loss, "acc": acc}, step=i)
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

_current = None  # the monitor of the last init(), used by log()/watch() without one


def init(run: str | None = None, tags: dict | None = None, broker: str | None = None, *,
         spool: bool | str = True, system: float | None = None,
         allowed_tags=None, hash_tags=(), text=None, salt: str | None = None,
         metric_names=None, metric_pattern: str | None = None,
         handle_sigterm: bool = True, config=None, **options):
    """Start monitoring a run; returns a :class:`~telltale.producers.Monitor`.

    ``run`` defaults to ``TELLTALE_RUN``. ``broker`` (or ``TELLTALE_KAFKA``) selects Kafka,
    with security settings from ``TELLTALE_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_*`` /
    ``_SSL_*``; without one the run goes through the embedded pipeline in a child process,
    which prints alerts to stderr and keeps results in ``TELLTALE_STORE_DIR``.

    ``spool``: with Kafka, batches that cannot be delivered go to a spool file under
    ``TELLTALE_SPOOL_DIR`` (or the directory given) and are replayed in order; ``False``
    keeps them in memory only. ``system``: seconds between system-metric samples
    (``TELLTALE_SYSTEM_INTERVAL``; ``0``/unset = off). ``allowed_tags`` (default
    ``TELLTALE_ALLOWED_TAGS`` or rank, host, node, model), ``hash_tags`` (allowed, values
    hashed with ``salt``; default: the deployment's random salt in ``TELLTALE_HASH_SALT_FILE``,
    made on first use), ``text`` (hook for string metric values; default drops them),
    ``metric_names`` / ``metric_pattern`` (only metrics whose names match these globs or
    this regex leave the process; default ``TELLTALE_METRIC_NAMES`` /
    ``TELLTALE_METRIC_PATTERN``, unset = any name).
    ``config``: the settings (a :class:`~telltale.config.Config`; default
    ``Config.from_env()``, with ``broker`` over ``TELLTALE_KAFKA``).
    Other keyword arguments go to :class:`~telltale.producers.Monitor` (``max_queue``,
    ``batch_size``, ``overflow``, ...).
    """
    global _current
    from dataclasses import replace

    from telltale.config import Config
    from telltale.producers import CallableTransport, Monitor, kafka_transport
    from telltale.producers.privacy import Privacy, drop_text
    from telltale.producers.spool import Spool

    cfg = config or Config.from_env()
    if broker:
        cfg = replace(cfg, kafka=broker)
    run = run or cfg.run
    if not run:
        raise ValueError("telltale.init needs a run id: init(run='exp-1') or TELLTALE_RUN")
    privacy = Privacy(cfg.allowed_tags if allowed_tags is None else allowed_tags,
                      hash_tags=hash_tags, text=text or drop_text, salt=salt,
                      salt_file=cfg.hash_salt_file,
                      metric_names=cfg.metric_names if metric_names is None else metric_names,
                      metric_pattern=metric_pattern or cfg.metric_pattern)
    sp = None
    if cfg.kafka:
        transport = kafka_transport(cfg.kafka, cfg.metrics_topic, **cfg.kafka_options())
        if spool:
            rank = str((tags or {}).get("rank", os.environ.get("RANK", "0")))
            sp = Spool(spool if isinstance(spool, str) else cfg.spool_dir, run, rank)
    else:
        from telltale.embedded_process import shared_process

        transport = CallableTransport(shared_process(cfg).submit)
    mon = Monitor(run, transport, tags=tags, spool=sp, privacy=privacy, **options)
    if system is None:
        system = cfg.system_interval
    if system:
        from telltale.producers.system import SystemSampler

        SystemSampler(mon, interval=system).start()
    if handle_sigterm:
        from telltale.producers.signals import flush_on_sigterm

        flush_on_sigterm()
    _current = mon
    return mon


def log(metrics: dict, step: int | None = None, kind: str = "train", **kw) -> None:
    """``log()`` on the monitor of the last :func:`init`."""
    if _current is None:
        raise RuntimeError("call telltale.init(run=...) before telltale.log()")
    _current.log(metrics, step=step, kind=kind, **kw)


def watch(model, every: int = 50, monitor=None, **kw):
    """Publish gradient, weight, update, activation and attention statistics of a PyTorch
    model every ``every`` training steps; see :func:`telltale.producers.watch.watch`."""
    from telltale.producers.watch import watch as _watch

    mon = monitor or _current
    if mon is None:
        raise RuntimeError("call telltale.init(run=...) before telltale.watch(model)")
    return _watch(model, mon, every=every, **kw)


def close() -> None:
    """Close the monitor of the last :func:`init`."""
    if _current is not None:
        _current.close()
