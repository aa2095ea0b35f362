"""Alert handlers: where a group of one run's alert records is sent (webhook, Slack,
e-mail, stdout); each sends or raises :class:`DeliveryError`. :func:`build_handler` makes
one from its configuration entry.

No message, log line or dead-letter reason built here contains a secret: a webhook or Slack
URL (whose path is the token) is shown as ``scheme://host/…``, and the SMTP password is
only read when logging in, over STARTTLS with a verified certificate.

Every request carries an idempotency key per alert record, ``<id>:<state>:<step>``
(header ``Idempotency-Key`` on the webhook, the Message-ID of an e-mail), so a receiver
can drop the duplicates a redelivery may cause.

Routing (:mod:`telltale.sinks.routes`), silences (:mod:`telltale.sinks.silences`) and
delivery with retries (:mod:`telltale.sinks.delivery`) have modules of their own.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import sys
import urllib.error
import urllib.request
import uuid
from email.message import EmailMessage

from telltale.config import ConfigError  # one error class for every setting
from telltale.records import record_key
from telltale.redact import redact_url, redact_urls
from telltale.sinks.routes import SEVERITIES

NOTIFICATION_SCHEMA = "telltale.notification/1"


class DeliveryError(Exception):
    """A handler could not deliver (the receiver is down or refused)."""


def idempotency_key(a: dict) -> str:
    return record_key(a)


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
            reason = redact_urls(str(getattr(exc, "reason", None) or exc))
            raise DeliveryError(f"{self.where} unreachable: {reason}") from None

    def send(self, alerts):
        for a in alerts:
            self._post({"schema": NOTIFICATION_SCHEMA, "alert": a}, idempotency_key(a))


def _summary(a: dict) -> str:
    mark = {"firing": ":rotating_light:", "updated": ":warning:",
            "resolved": ":white_check_mark:"}.get(a.get("state") or "", "")
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
