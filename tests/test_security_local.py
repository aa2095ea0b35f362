"""Security on this machine, without the secured pair: e-mail over verified STARTTLS (a real
aiosmtpd with a self-signed certificate), the dashboard's bind/auth/Host-header rules (a
real `telltale ui`), private spool/store/silence files, and URL redaction."""

from __future__ import annotations

import base64
import http.client
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from telltale.redact import redact_url, redact_urls
from telltale.sinks.handlers import ConfigError, DeliveryError, EmailHandler, WebhookHandler
from tests.support.servers import free_port

ALERT = {"id": "a1", "run": "r1", "metric": "loss", "rank": "0", "state": "firing",
         "severity": "critical", "step": 5, "detector": "zscore", "message": "loss spiked"}


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by nobody anyone trusts (openssl)."""
    cert, key = tmp / "smtp.crt", tmp / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class TlsSmtp:
    """aiosmtpd offering STARTTLS with ``cert``; records every login it is given."""

    def __init__(self, cert: Path, key: Path):
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.logins: list[tuple[bytes, bytes]] = []
        self.messages: list[bytes] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append(envelope.content)
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            outer.logins.append((auth_data.login, auth_data.password))
            return AuthResult(success=True)

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     tls_context=ctx, authenticator=authenticator,
                                     auth_require_tls=False)  # a weak server: the client
        self.controller.start()                               # must protect the password

    def close(self):
        self.controller.stop()


def test_email_login_only_over_a_verified_starttls(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    smtp = TlsSmtp(cert, key)
    pw = tmp_path / "smtp.password"
    pw.write_text("s3cret-smtp-password\n")
    monkeypatch.setenv("TT_SMTP_PASSWORD", "s3cret-smtp-password")
    try:
        spec = dict(host="127.0.0.1", port=smtp.port, to=["oncall@example"], starttls=True,
                    username="telltale", timeout=10)
        # a server whose certificate nobody trusts (a man in the middle) never sees it
        with pytest.raises(DeliveryError) as err:
            EmailHandler("mail", password_env="TT_SMTP_PASSWORD", **spec).send([ALERT])
        assert smtp.logins == [] and smtp.messages == []
        assert "certificate is not trusted" in str(err.value) and "cafile" in str(err.value)
        # with the CA that signed it: verified, logged in, delivered
        EmailHandler("mail", cafile=str(cert), password_file=str(pw), **spec).send([ALERT])
        assert smtp.logins == [(b"telltale", b"s3cret-smtp-password")]
        assert len(smtp.messages) == 1 and b"loss spiked" in smtp.messages[0]
    finally:
        smtp.close()
    with pytest.raises(ConfigError, match="needs starttls"):  # never a login in clear text
        EmailHandler("mail", host="127.0.0.1", to=["a@b"], username="u", password_env="X")


def ui(args, timeout=30, **kw):
    return subprocess.Popen([sys.executable, "-m", "telltale", "ui", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def request(port, path="/api/runs", host=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    c.request("GET", path, headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


def wait_serving(proc, port):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            return request(port)
        except OSError:
            time.sleep(0.2)
    raise AssertionError("telltale ui did not start")


def test_ui_beyond_loopback_needs_an_auth_option(tmp_path):
    p = ui(["--host", "0.0.0.0", "--port", str(free_port()), "--store-dir", str(tmp_path)])
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("telltale ui --host 0.0.0.0 served without any auth option") \
            from None
    assert p.returncode == 2 and "--auth-token-file" in err and "--basic-auth-file" in err, err


def test_ui_token_and_basic_auth(tmp_path):
    token = tmp_path / "ui.token"
    token.write_text("tok-" + os.urandom(8).hex())
    t = token.read_text()
    port = free_port()
    p = ui(["--host", "0.0.0.0", "--port", str(port), "--store-dir", str(tmp_path),
            "--auth-token-file", str(token)])
    try:
        assert wait_serving(p, port)[0] == 401
        assert request(port, headers={"Authorization": "Bearer nope"})[0] == 401
        assert request(port, headers={"Authorization": f"Bearer {t}"})[0] == 200
        status, headers, _ = request(port, f"/?token={t}")
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert request(port, "/", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        # a name that is neither loopback, an address nor allowed: refused even with the token
        assert request(port, host="evil.example", headers={
            "Authorization": f"Bearer {t}"})[0] == 421
    finally:
        p.terminate()
        out = p.communicate(timeout=30)[0]
    assert "needs the token" in out and t not in out  # says so, without printing it
    basic = tmp_path / "ui.basic"
    basic.write_text("ops:pa55-word\n")
    port = free_port()
    p = ui(["--host", "0.0.0.0", "--port", str(port), "--store-dir", str(tmp_path),
            "--basic-auth-file", str(basic), "--allow-host", "dash.example"])
    try:
        status, headers, _ = wait_serving(p, port)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        good = {"Authorization": "Basic " + base64.b64encode(b"ops:pa55-word").decode()}
        bad = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}
        assert request(port, headers=bad)[0] == 401
        assert request(port, headers=good)[0] == 200
        assert request(port, host="dash.example:443", headers=good)[0] == 200
    finally:
        p.terminate()
        p.communicate(timeout=30)


def test_ui_on_loopback_checks_the_host_header(tmp_path):
    """DNS rebinding: a page on attacker.example whose name now points at 127.0.0.1."""
    port = free_port()
    p = ui(["--port", str(port), "--store-dir", str(tmp_path)])
    try:
        assert wait_serving(p, port)[0] == 200
        assert request(port, host=f"localhost:{port}")[0] == 200
        assert request(port, host=f"attacker.example:{port}")[0] == 421
        assert request(port, "/", host="attacker.example")[0] == 421
    finally:
        p.terminate()
        p.communicate(timeout=30)


def modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root.parent)): stat.filemode(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


def test_spool_store_and_silences_are_private_whatever_the_umask(tmp_path):
    from telltale.producers.spool import Spool
    from telltale.sinks.local import LocalStore
    from telltale.sinks.silences import FileSilences, new_silence

    old = os.umask(0o022)
    try:
        sp = Spool(str(tmp_path / "spool"), "run-1")
        sp.append(b'{"run":"run-1"}', 1)
        sp.advance(0)
        store = LocalStore(str(tmp_path / "store"))
        store.write_alerts([ALERT])
        store.close()
        FileSilences(str(tmp_path / "silences" / "silences.json")).add(
            new_silence("1h", run="r*"))
    finally:
        os.umask(old)
    for d in ("spool", "store", "silences"):
        found = modes(tmp_path / d)
        assert len(found) > 1
        bad = {p: m for p, m in found.items() if m not in ("drwx------", "-rw-------")}
        assert not bad, bad
    sp.close()


def test_cli_output_is_private_whatever_the_umask(tmp_path):
    store = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "telltale", "demo", "--steps", "60", "--rate",
                          "0", "--store-dir", str(store)], capture_output=True, text=True,
                         timeout=300, preexec_fn=lambda: os.umask(0o022))
    assert res.returncode == 0, res.stderr
    found = modes(store)
    assert any(p.endswith("metrics.jsonl") for p in found)
    bad = {p: m for p, m in found.items() if m not in ("drwx------", "-rw-------")}
    assert not bad, bad


def test_urls_are_shown_as_scheme_and_host_only():
    assert redact_url("https://hooks.slack.com/services/T0/B0/xyz") == \
        "https://hooks.slack.com/…"
    assert redact_url("https://user:pw@ops.example:8443/hook?key=k#f") == \
        "https://ops.example:8443/…"
    assert redact_url("http://127.0.0.1:9/") == "http://127.0.0.1:9/"
    assert redact_urls("POST https://h.example/a/b?t=1 failed") == \
        "POST https://h.example/… failed"
    h = WebhookHandler("ops", "https://ops.example/hook/SECRET", headers={"X-Token": "t0k"})
    assert "SECRET" not in repr(h) and "t0k" not in repr(h)
    with pytest.raises(ConfigError) as err:
        WebhookHandler("ops", "ftp://ops.example/hook/SECRET")
    assert "SECRET" not in str(err.value)


def test_overlapping_kafka_log_captures_leave_kafka_logs_propagating():
    import logging
    import threading

    from telltale.access import KafkaLogCapture

    kafka = logging.getLogger("kafka")
    assert kafka.propagate
    a, b = KafkaLogCapture(), KafkaLogCapture()
    a.__enter__()
    t = threading.Thread(target=b.__enter__)
    t.start()
    t.join()
    a.__exit__(None, None, None)  # the first one out, while the other is still open
    assert not kafka.propagate
    b.__exit__(None, None, None)
    assert kafka.propagate  # was left False for good before
