"""Delivery: the notify configuration and :class:`Notifier`, which routes a batch of alert
records, drops the silenced ones, groups the rest per (handler, run) and sends each group,
retrying with exponential backoff while a handler is down. :meth:`Notifier.deliver` returns
only once every group was delivered or, after ``max_attempts``, handed to the dead-letter
callback with the reason: callers commit their input after it returns (at-least-once).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from telltale.redact import redact_urls
from telltale.sinks.handlers import ConfigError, DeliveryError, Handler, build_handler
from telltale.sinks.routes import SEVERITIES, STATES, Route
from telltale.sinks.silences import Silence

log = logging.getLogger("telltale.notify")


@dataclass
class NotifyConfig:
    handlers: dict[str, Handler]
    routes: list[Route]
    group_wait: float = 1.0  # seconds a burst of one run's alerts is collected
    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    @classmethod
    def load(cls, path: str) -> NotifyConfig:
        """Read a YAML or JSON notify configuration (see README "Delivering alerts")."""
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read notify config {path}: {exc}") from None
        if path.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConfigError("YAML notify configs need PyYAML (pip install pyyaml), "
                                  "or write the file as JSON") from None
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        else:
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{path}: invalid JSON: {exc}") from None
        return cls.from_dict(doc, path)

    @classmethod
    def from_dict(cls, doc, where: str = "notify config") -> NotifyConfig:
        if not isinstance(doc, dict) or not isinstance(doc.get("handlers"), dict):
            raise ConfigError(f"{where}: needs a 'handlers' mapping of name -> "
                              "{type: webhook|slack|email|stdout, ...}")
        handlers = {n: build_handler(n, s or {}) for n, s in doc["handlers"].items()}
        routes = []
        for i, r in enumerate(doc.get("routes") or [{"to": list(handlers)}]):
            r = dict(r or {})
            to = r.pop("to", None)
            to = [to] if isinstance(to, str) else to
            if not to or any(t not in handlers for t in to):
                raise ConfigError(f"{where}: route {i} 'to' must list handler names "
                                  f"({sorted(handlers)}), got {to!r}")
            match = r.pop("match", r)
            states = match.pop("state", match.pop("states", STATES))
            states = (states,) if isinstance(states, str) else tuple(states)
            sev = match.get("severity")
            if sev is not None and sev not in SEVERITIES:
                raise ConfigError(f"{where}: route {i} severity must be one of {SEVERITIES}")
            if any(s not in STATES for s in states):
                raise ConfigError(f"{where}: route {i} states must be among {STATES}")
            unknown = set(match) - {"severity", "run", "metric"}
            if unknown:
                raise ConfigError(f"{where}: route {i} has unknown matchers {sorted(unknown)}")
            routes.append(Route(to, sev, match.get("run"), match.get("metric"), states))
        opts = {k: doc[k] for k in ("group_wait", "max_attempts", "backoff_initial",
                                    "backoff_max") if k in doc}
        return cls(handlers, routes, **opts)



class Notifier:
    """Routes, silences, groups and delivers alert records (see the module docstring)."""

    def __init__(self, config: NotifyConfig, silences: Callable[[], list[Silence]] = list,
                 dead_letter: Callable[[dict, str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 stopping: Callable[[], bool] = lambda: False):
        self.config, self.silences, self.dead_letter = config, silences, dead_letter
        self.sleep, self.stopping = sleep, stopping
        self.counts = {"delivered": 0, "silenced": 0, "unrouted": 0, "dead_lettered": 0,
                       "retries": 0}

    def plan(self, alerts: list[dict]) -> dict[tuple[str, str], list[dict]]:
        """(handler name, run) -> the alerts it gets, in order."""
        active = [s for s in self.silences() if s.active()]
        groups: dict[tuple[str, str], list[dict]] = {}
        for a in alerts:
            if any(s.matches(a) for s in active):
                self.counts["silenced"] += 1
                continue
            names = []
            for r in self.config.routes:
                if r.matches(a):
                    names += [n for n in r.to if n not in names]
            if not names:
                self.counts["unrouted"] += 1
            for n in names:
                groups.setdefault((n, str(a.get("run"))), []).append(a)
        return groups

    def deliver(self, alerts: list[dict]) -> bool:
        """Deliver a batch; returns True when every group is sent or dead-lettered, False
        if asked to stop first (then the caller must not commit: it is redelivered)."""
        pending = self.plan(alerts)
        cfg = self.config
        attempt, delay = 1, cfg.backoff_initial
        errors: dict[tuple[str, str], str] = {}
        while pending:
            for key in list(pending):
                try:
                    cfg.handlers[key[0]].send(pending[key])
                except DeliveryError as exc:
                    errors[key] = str(exc)
                    continue
                except Exception as exc:  # a handler bug must not lose alerts either
                    errors[key] = redact_urls(f"handler error: {exc!r}")
                    continue
                self.counts["delivered"] += len(pending.pop(key))
                errors.pop(key, None)
            if not pending:
                return True
            if self.stopping():
                return False
            if attempt >= cfg.max_attempts:
                for (name, _), group in pending.items():
                    reason = (f"notify: handler {name!r} failed {attempt} times: "
                              f"{errors.get((name, _), '?')}")
                    log.error("%s; dead-lettering %d alert(s)", reason, len(group))
                    for a in group:
                        self.counts["dead_lettered"] += 1
                        if self.dead_letter is not None:
                            self.dead_letter(a, reason)
                return True
            log.warning("delivery failed (%s); retry %d/%d in %.1fs",
                        "; ".join(f"{k[0]}: {v}" for k, v in errors.items()), attempt,
                        cfg.max_attempts - 1, delay)
            self.counts["retries"] += 1
            self.sleep(delay)
            attempt += 1
            delay = min(delay * 2, cfg.backoff_max)
        return True  # nothing to send: every alert was silenced or unrouted
