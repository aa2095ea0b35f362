"""Alert delivery: handlers (webhook, Slack, e-mail, stdout), routing rules and silences.

Transport-free core of ``telltale notify`` and of the embedded notifier:

- a **handler** sends a group of alert records of one run somewhere, or raises
  :class:`DeliveryError`;
- **routes** pick handlers by minimum severity, run glob, metric glob and state;
- **silences** (matchers + expiry) suppress matching alerts while active;
- :class:`Notifier.deliver` routes a batch, groups it per (handler, run) and sends each
  group, retrying with exponential backoff while a handler is down. It returns only once
  every group was delivered or, after ``max_attempts``, handed to the dead-letter callback
  with the reason: callers commit their input after it returns (at-least-once).

No message, log line or dead-letter reason built here contains a secret: a webhook or Slack
URL (whose path is the token) is shown as ``scheme://host/…``, and the SMTP password is
only read when logging in, over STARTTLS with a verified certificate.

Every request carries an idempotency key per alert record, ``<id>:<state>:<step>``
(header ``Idempotency-Key`` on the webhook, the Message-ID of an e-mail), so a receiver
can drop the duplicates a redelivery may cause.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import smtplib
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from telltale.config import ConfigError  # one error class for every setting
from telltale.private import makedirs, open_private
from telltale.records import record_key
from telltale.redact import redact_url, redact_urls

log = logging.getLogger("telltale.notify")

SEVERITIES = ("info", "warning", "critical")
STATES = ("firing", "updated", "resolved")
NOTIFICATION_SCHEMA = "telltale.notification/1"


class DeliveryError(Exception):
    """A handler could not deliver (the receiver is down or refused)."""


def idempotency_key(a: dict) -> str:
    return record_key(a)


def severity_at_least(a: dict, minimum: str | None) -> bool:
    if not minimum:
        return True
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return rank.get(a.get("severity"), 0) >= rank[minimum]


def _glob(value, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(str(value), pattern)


# -- handlers ---------------------------------------------------------------------


class Handler:
    """Sends one run's alert records (a group); raises DeliveryError on failure."""

    name = ""

    def send(self, alerts: list[dict]) -> None:
        raise NotImplementedError


class StdoutHandler(Handler):
    """One line per alert on stdout (``verbose``: with explanation, cause, action)."""

    def __init__(self, name: str = "stdout", verbose: bool = True, stream=None):
        self.name, self.verbose, self.stream = name, verbose, stream

    def send(self, alerts):
        from telltale.embedded import format_alert

        out = self.stream or sys.stdout
        for a in alerts:
            print(format_alert(a, verbose=self.verbose), file=out, flush=True)


class WebhookHandler(Handler):
    """JSON POST per alert: ``{"schema": "telltale.notification/1", "alert": {...}}`` with
    an ``Idempotency-Key`` header; any 2xx is success."""

    def __init__(self, name: str, url: str, timeout: float = 5.0, headers: dict | None = None):
        if not url or not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"handler {name!r}: url must be http(s)://..., got "
                              f"{redact_url(url) if url else repr(url)}")
        self.name, self.url, self.timeout = name, url, float(timeout)
        self.where = redact_url(url)  # what messages show: the path is often the token
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.where!r})"

    def _post(self, body: dict, key: str) -> None:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": key,
            "User-Agent": "telltale-notify", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"{self.where} answered HTTP {exc.code}") from None
        except (OSError, urllib.error.URLError) as exc:
            reason = redact_urls(getattr(exc, "reason", None) or exc)
            raise DeliveryError(f"{self.where} unreachable: {reason}") from None

    def send(self, alerts):
        for a in alerts:
            self._post({"schema": NOTIFICATION_SCHEMA, "alert": a}, idempotency_key(a))


def _summary(a: dict) -> str:
    mark = {"firing": ":rotating_light:", "updated": ":warning:",
            "resolved": ":white_check_mark:"}.get(a.get("state"), "")
    rank = f" rank {a['rank']}" if str(a.get("rank", "0")) != "0" else ""
    return (f"{mark} *{a.get('state', 'firing').upper()}* [{a.get('severity')}] "
            f"`{a.get('run')}`{rank} step {a.get('step')}: {a.get('message')}")


class SlackHandler(WebhookHandler):
    """Slack incoming-webhook payload (``text`` + ``blocks``), one message per run group."""

    def send(self, alerts):
        blocks = []
        for a in alerts:
            text = _summary(a)
            if a.get("state") != "resolved":
                extra = [a.get("explanation"), a.get("cause") and f"_likely cause_: {a['cause']}",
                         a.get("action") and f"_next step_: {a['action']}"]
                text += "".join(f"\n{x}" for x in extra if x)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
        run = alerts[0].get("run")
        body = {"text": f"telltale: {len(alerts)} alert(s) for run {run}: "
                        + "; ".join(f"{a.get('metric')} {a.get('state')}" for a in alerts[:5]),
                "blocks": blocks[:50]}
        self._post(body, ",".join(idempotency_key(a) for a in alerts))


class EmailHandler(Handler):
    """One e-mail per run group over SMTP.

    ``starttls``: upgrade to TLS and verify the server's certificate and host name against
    the system CAs or ``cafile``. ``username``: log in, with the password from the file
    ``password_file`` or the environment variable ``password_env``; a login needs
    ``starttls`` (the password never crosses the network in clear text)."""

    def __init__(self, name: str, host: str = "localhost", port: int = 25,
                 sender: str = "telltale@localhost", to=None, starttls: bool = False,
                 username: str | None = None, password_env: str | None = None,
                 password_file: str | None = None, cafile: str | None = None,
                 timeout: float = 10.0):
        if not to:
            raise ConfigError(f"handler {name!r}: e-mail needs 'to' (a list of addresses)")
        if username and not starttls:
            raise ConfigError(f"handler {name!r}: a login (username) needs starttls: true, "
                              "or the password would cross the network in clear text")
        if username and not (password_env or password_file):
            raise ConfigError(f"handler {name!r}: a login needs password_file (a file holding "
                              "the password) or password_env (a variable holding it)")
        if cafile and not os.path.isfile(cafile):
            raise ConfigError(f"handler {name!r}: cafile {cafile} does not exist")
        self.name, self.host, self.port, self.sender = name, host, int(port), sender
        self.to = [to] if isinstance(to, str) else list(to)
        self.starttls, self.username, self.password_env = starttls, username, password_env
        self.password_file, self.cafile = password_file, cafile
        self.timeout = float(timeout)

    def _password(self) -> str:
        if self.password_file:
            try:
                with open(self.password_file) as f:
                    return f.read().strip()
            except OSError as exc:
                raise DeliveryError(f"cannot read the SMTP password_file {self.password_file}: "
                                    f"{exc.strerror}") from None
        return os.environ.get(self.password_env or "", "")

    def message(self, alerts: list[dict]) -> EmailMessage:
        a0 = alerts[0]
        worst = max((a.get("severity", "info") for a in alerts), key=SEVERITIES.index)
        states = sorted({a.get("state", "firing") for a in alerts})
        msg = EmailMessage()
        msg["Subject"] = (f"[telltale {worst}] {a0.get('run')}: {len(alerts)} alert(s) "
                          f"({', '.join(states)}) — {a0.get('message')}"[:200])
        msg["From"], msg["To"] = self.sender, ", ".join(self.to)
        keys = [idempotency_key(a) for a in alerts]
        msg["Message-ID"] = f"<{uuid.uuid5(uuid.NAMESPACE_URL, ','.join(keys)).hex}@telltale>"
        msg["X-Telltale-Idempotency-Keys"] = ", ".join(keys)[:900]
        from telltale.embedded import format_alert

        body = "\n\n".join(format_alert(a, verbose=True) for a in alerts)
        msg.set_content(body + "\n\n-- \ntelltale notify (alert schema telltale.alert/2)\n")
        return msg

    def send(self, alerts):
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as s:
                if self.starttls:  # certificate and host name verified before any login
                    s.starttls(context=ssl.create_default_context(cafile=self.cafile))
                if self.username:
                    s.login(self.username, self._password())
                s.send_message(self.message(alerts))
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: the server's TLS certificate is "
                                f"not trusted ({exc.verify_message}); nothing was sent. Set "
                                "'cafile' to the CA that signed it, or fix 'host' to the name "
                                "on the certificate") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {self.host}:{self.port}: {exc}") from None


HANDLER_TYPES = {"webhook": WebhookHandler, "slack": SlackHandler, "email": EmailHandler,
                 "stdout": StdoutHandler}


def build_handler(name: str, spec: dict) -> Handler:
    spec = dict(spec)
    kind = spec.pop("type", None)
    cls = HANDLER_TYPES.get(kind)
    if cls is None:
        raise ConfigError(f"handler {name!r}: type must be one of {sorted(HANDLER_TYPES)}, "
                          f"got {kind!r}")
    if kind == "email" and "from" in spec:
        spec["sender"] = spec.pop("from")
    try:
        return cls(name=name, **spec)
    except TypeError as exc:
        raise ConfigError(f"handler {name!r} ({kind}): {exc}") from None


# -- routing ------------------------------------------------------------------------


@dataclass
class Route:
    """Alerts matching every given matcher go to ``to`` (handler names)."""

    to: list[str]
    severity: str | None = None  # minimum
    run: str | None = None  # glob
    metric: str | None = None  # glob
    states: tuple[str, ...] = STATES

    def matches(self, a: dict) -> bool:
        return (severity_at_least(a, self.severity) and _glob(a.get("run"), self.run)
                and _glob(a.get("metric"), self.metric)
                and a.get("state", "firing") in self.states)


@dataclass
class Silence:
    """Suppresses matching alerts until ``until`` (Unix seconds)."""

    id: str
    until: float
    run: str | None = None
    metric: str | None = None
    detector: str | None = None
    severity: str | None = None  # silences alerts at or below this severity
    comment: str = ""
    created: float = field(default_factory=time.time)

    def active(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.until

    def matches(self, a: dict, now: float | None = None) -> bool:
        if not self.active(now):
            return False
        if self.severity and severity_at_least(a, self.severity) and \
                a.get("severity") != self.severity:
            return False
        return (_glob(a.get("run"), self.run) and _glob(a.get("metric"), self.metric)
                and _glob(a.get("detector"), self.detector))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Silence:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` (or plain seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            v = float(t[:-1]) * units[t[-1]]
        else:
            v = float(t)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 1d") from None
    if v <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return v


class FileSilences:
    """Silences in a JSON file (embedded mode): ``{"silences": [...]}``."""

    def __init__(self, path: str):
        self.path = path

    def list(self) -> list[Silence]:
        try:
            with open(self.path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return []
        except ValueError as exc:
            log.warning("ignoring unreadable silences file %s: %s", self.path, exc)
            return []
        return [Silence.from_dict(d) for d in doc.get("silences", [])]

    def _write(self, items: list[Silence]) -> None:
        makedirs(os.path.dirname(os.path.abspath(self.path)))
        tmp = self.path + ".tmp"
        with open_private(tmp, "w") as f:
            json.dump({"silences": [s.to_dict() for s in items]}, f, indent=1)
        os.replace(tmp, self.path)

    def add(self, s: Silence) -> None:
        self._write([x for x in self.list() if x.id != s.id and x.active()] + [s])

    def remove(self, sid: str) -> bool:
        items = self.list()
        keep = [x for x in items if x.id != sid]
        self._write(keep)
        return len(keep) != len(items)


def new_silence(duration: str, comment: str = "", **matchers) -> Silence:
    if not any(matchers.values()):
        raise ValueError("a silence needs at least one matcher (--run, --metric, --detector "
                         "or --severity)")
    if matchers.get("severity") and matchers["severity"] not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}")
    return Silence(id=uuid.uuid4().hex[:10], until=time.time() + parse_duration(duration),
                   comment=comment, **matchers)


# -- configuration ------------------------------------------------------------------


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


# -- delivery ------------------------------------------------------------------------


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
