"""Authenticated access to Kafka, with failures explained in one line.

Credentials come from :class:`~telltale.config.Config` (env vars or secret files). The
checks here turn a wrong password, an untrusted certificate or a missing broker into a
message naming what failed and which variable to check, instead of a bootstrap timeout.
InfluxDB's own explanations live with its client in ``telltale/sinks/influx.py``.
No message built here contains a secret.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading

from telltale.config import Config


class AccessError(ConnectionError):
    """A service refused us or is unreachable; the message says what to check."""


class KafkaLogCapture(logging.Handler):
    """Collects kafka-python's log lines during a check (they name the real cause)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    _lock = threading.Lock()
    _active = 0  # captures open at once (threads): the last one out restores propagation
    _saved = True

    def __enter__(self):
        self.logger = logging.getLogger("kafka")
        with KafkaLogCapture._lock:
            if KafkaLogCapture._active == 0:
                KafkaLogCapture._saved = self.logger.propagate
                self.logger.propagate = False
            KafkaLogCapture._active += 1
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        with KafkaLogCapture._lock:
            KafkaLogCapture._active -= 1
            if KafkaLogCapture._active == 0:
                self.logger.propagate = KafkaLogCapture._saved


def speaks_tls(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when the first bootstrap address completes a TLS handshake (nothing verified:
    this only tells a TLS listener from a plain one)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            with ctx.wrap_socket(s):
                return True
    except (OSError, ValueError):
        return False


def sasl_mechanisms(cfg: Config, timeout: float = 3.0) -> list[str] | None:
    """The SASL mechanisms the first bootstrap broker enables, asked with one SaslHandshake
    v1 request (Kafka protocol API 17) over the configured TLS; None if it did not answer.

    kafka-python's own log names an unsupported mechanism only when the broker's answer
    arrives before it closes the socket, which is a race; this asks directly."""
    import struct

    host, _, port = cfg.kafka.split(",")[0].strip().rpartition(":")
    mech = cfg.kafka_sasl_mechanism.encode()
    client = b"telltale-doctor"
    body = (struct.pack(">hhih", 17, 1, 1, len(client)) + client
            + struct.pack(">h", len(mech)) + mech)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
            sock = raw
            if cfg.kafka_security_protocol.upper().endswith("SSL"):
                ctx = ssl.create_default_context(cafile=cfg.kafka_ssl_cafile)
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                sock = ctx.wrap_socket(raw)
            sock.sendall(struct.pack(">i", len(body)) + body)
            data = b""
            while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except (OSError, ValueError):
        return None
    try:
        (count,) = struct.unpack_from(">i", data, 10)  # size, correlation id, error code
        pos, names = 14, []
        for _ in range(max(count, 0)):
            (n,) = struct.unpack_from(">h", data, pos)
            names.append(data[pos + 2:pos + 2 + n].decode())
            pos += 2 + n
        return names
    except (struct.error, UnicodeDecodeError):
        return None


def explain_kafka_failure(cfg: Config, log_text: str, exc: BaseException | None = None) -> str:
    """One line: why Kafka at ``cfg.kafka`` did not let us in, and what to check."""
    where = f"Kafka at {cfg.kafka}"
    proto = cfg.kafka_security_protocol.upper()
    if "UnsupportedSaslMechanism" in log_text:
        return (f"{where} does not accept SASL mechanism {cfg.kafka_sasl_mechanism}: set "
                "TELLTALE_KAFKA_SASL_MECHANISM to one the broker enables (its "
                "sasl.enabled.mechanisms, e.g. SCRAM-SHA-512)")
    mismatch = re.search(r"(Hostname|IP address) mismatch, certificate is not valid for "
                         r"'([^']*)'", log_text)
    if mismatch:
        return (f"the TLS certificate of {where} is not issued for {mismatch.group(2)!r} (the "
                "certificate is trusted, the name is not on it): put a host name or address "
                "the certificate names in TELLTALE_KAFKA (see its subjectAltName)")
    if "SaslAuthenticationFailed" in log_text or "invalid credentials" in log_text:
        return (f"{where} rejected the credentials of SASL user {cfg.kafka_sasl_username!r} "
                f"({cfg.kafka_sasl_mechanism}): check TELLTALE_KAFKA_SASL_USERNAME and "
                "TELLTALE_KAFKA_SASL_PASSWORD (or TELLTALE_KAFKA_SASL_PASSWORD_FILE)")
    if "CERTIFICATE_VERIFY_FAILED" in log_text:
        return (f"the TLS certificate of {where} is not trusted: set TELLTALE_KAFKA_SSL_CAFILE "
                "to the CA certificate that signed it")
    if "Handshake failed" in log_text or "WRONG_VERSION_NUMBER" in log_text:
        return (f"TLS handshake with {where} failed: check TELLTALE_KAFKA_SECURITY_PROTOCOL "
                f"(now {proto}) matches the broker's listener")
    if "Connection refused" in log_text or "ECONNREFUSED" in log_text:
        return (f"{where} is not reachable (no broker answers): check TELLTALE_KAFKA or start "
                "one (scripts/services.sh start)")
    if not proto.endswith("SSL") and "disconnected" in log_text and cfg.kafka \
            and speaks_tls(cfg.kafka):
        want = "SASL_SSL" if proto.startswith("SASL") else "SSL (or SASL_SSL)"
        return (f"{where} expects TLS but TELLTALE_KAFKA_SECURITY_PROTOCOL is {proto}: set it "
                f"to {want}, with TELLTALE_KAFKA_SSL_CAFILE if its CA is not a system one")
    if proto.startswith("SASL") and "disconnected" in log_text:
        enabled = sasl_mechanisms(cfg)
        if enabled and cfg.kafka_sasl_mechanism.upper() not in enabled:
            return (f"{where} does not accept SASL mechanism {cfg.kafka_sasl_mechanism}: set "
                    "TELLTALE_KAFKA_SASL_MECHANISM to one the broker enables: "
                    + ", ".join(enabled))
        # the broker may close the socket before its SaslAuthenticate answer is read
        return (f"{where} closed the connection during SASL authentication: most likely it "
                f"rejected the credentials of user {cfg.kafka_sasl_username!r} "
                f"({cfg.kafka_sasl_mechanism}); check TELLTALE_KAFKA_SASL_USERNAME and "
                "TELLTALE_KAFKA_SASL_PASSWORD (or TELLTALE_KAFKA_SASL_PASSWORD_FILE)")
    if proto == "PLAINTEXT" and "disconnected" in log_text:
        return (f"{where} closed the connection: it may need TLS and SASL; set "
                "TELLTALE_KAFKA_SECURITY_PROTOCOL (e.g. SASL_SSL) and the credentials")
    detail = f" ({type(exc).__name__})" if exc is not None else ""
    return (f"{where} is not reachable{detail}: check TELLTALE_KAFKA and "
            f"TELLTALE_KAFKA_SECURITY_PROTOCOL (now {proto})")


def kafka_admin(cfg: Config, timeout: float = 10.0, connect_timeout: float = 10.0):
    """A connected kafka-python admin client, or :class:`AccessError` after
    ``connect_timeout`` s; ``timeout`` bounds each admin request."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    opts = cfg.kafka_options()
    with KafkaLogCapture() as seen:
        try:
            return KafkaAdminClient(bootstrap_servers=cfg.kafka, client_id="telltale-admin",
                                    request_timeout_ms=int(timeout * 1000),
                                    bootstrap_timeout_ms=int(connect_timeout * 1000),
                                    **opts)
        except KafkaError as exc:
            raise AccessError(explain_kafka_failure(cfg, "\n".join(seen.lines), exc)) from None


def check_kafka(cfg: Config, timeout: float = 10.0) -> None:
    """Connect and authenticate once; raise :class:`AccessError` with the reason if not."""
    kafka_admin(cfg, timeout).close()


def faust_credentials(cfg: Config):
    """``broker_credentials`` for faust.App from the Kafka security settings (None: plain)."""
    opts = cfg.kafka_options()
    proto = opts["security_protocol"]
    if proto == "PLAINTEXT":
        return None
    import faust

    ctx = None
    if proto.endswith("SSL"):
        ctx = ssl.create_default_context(cafile=opts.get("ssl_cafile"))
        if opts.get("ssl_certfile"):
            ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    if proto.startswith("SASL"):
        return faust.SASLCredentials(username=opts["sasl_plain_username"],
                                     password=opts["sasl_plain_password"],
                                     ssl_context=ctx, mechanism=opts["sasl_mechanism"])
    return faust.SSLCredentials(ctx)
