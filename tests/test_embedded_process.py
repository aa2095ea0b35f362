"""The embedded default runs in a child process: same results, nothing lost, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TRAINER = r"""
import os, sys, time
import telltale
import telltale.embedded_process as ep

if sys.argv[1] == "thread":  # the in-thread pipeline of before, for comparison
    from telltale.embedded import shared_driver
    ep.shared_process = shared_driver
mon = telltale.init(run="cmp-run", tags={"model": "m"}, handle_sigterm=sys.argv[2] == "term")
if ep._process is not None:
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(ep._process.pid))
for s in range(1, 401):
    loss = float("nan") if s == 300 else 50.0 if s == 200 else 1.0 + 0.01 * (s % 5)
    mon.log({"loss": loss, "lr": 0.1}, step=s, ts=1000.0 + s)
if sys.argv[2] == "close":
    telltale.close()
elif sys.argv[2] in ("term", "wait"):
    assert mon.flush(10)
    print("flushed", flush=True)
    time.sleep(60)
# "exit": no close(); flushed at interpreter exit
"""


def run_trainer(tmp_path, mode: str, how: str, name: str = "store", **extra):
    """Run TRAINER; ``.child_alive`` tells whether its pipeline process outlived it (the
    output pipes are inherited by the child, so reading them would wait for the child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env["TELLTALE_STORE_DIR"] = str(tmp_path / name)
    env.update(extra)
    env["PID_FILE"] = pid_file = str(tmp_path / f"{name}.pid")
    p = subprocess.Popen([sys.executable, "-c", TRAINER, mode, how], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.wait(120)
        p.child_alive = mode == "process" and alive(int(open(pid_file).read()))
    finally:
        p.stdout, p.stderr = p.communicate(timeout=60)
    return p


def store(path) -> dict[str, list[dict]]:
    """Every record of a local store, by file, without the end marker's wall-clock time."""
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".jsonl"):
            with open(os.path.join(path, f)) as fh:
                recs = [json.loads(line) for line in fh if line.strip()]
            out[f] = sorted(json.dumps(_steady(r), sort_keys=True) for r in recs)
    return out


def _steady(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("created", "processed_at")}


def stored_steps(path) -> set[int]:
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return {json.loads(line)["fields"]["step"] for line in f}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def alert_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("telltale: [")]


def test_alerts_and_store_are_the_in_thread_pipelines(tmp_path):
    child = run_trainer(tmp_path, "process", "close", "child")
    thread = run_trainer(tmp_path, "thread", "close", "thread")
    assert child.returncode == 0 and thread.returncode == 0, child.stderr + thread.stderr
    assert alert_lines(child.stderr) and alert_lines(child.stderr) == alert_lines(thread.stderr)
    got, want = store(tmp_path / "child"), store(tmp_path / "thread")
    assert "alerts.log.jsonl" in got and set(got) == set(want)
    for name in want:
        assert got[name] == want[name], name
    assert not child.child_alive


def test_the_notify_config_is_honoured_in_the_child(tmp_path):
    notify = tmp_path / "notify.json"
    notify.write_text(json.dumps({"handlers": {"console": {"type": "stdout",
                                                           "verbose": False}}}))
    env = {"TELLTALE_NOTIFY_CONFIG": str(notify)}
    child = run_trainer(tmp_path, "process", "close", "child", **env)
    thread = run_trainer(tmp_path, "thread", "close", "thread", **env)
    assert child.returncode == 0 and thread.returncode == 0, child.stderr + thread.stderr
    delivered = [line for line in child.stdout.splitlines() if line.startswith("[")]
    assert any("FIRING cmp-run step 300" in line for line in delivered), child.stdout
    assert sorted(delivered) == sorted(line for line in thread.stdout.splitlines()
                                       if line.startswith("["))


def test_a_bad_notify_config_still_fails_init(tmp_path, monkeypatch):
    import telltale

    monkeypatch.delenv("TELLTALE_KAFKA", raising=False)
    monkeypatch.setenv("TELLTALE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("TELLTALE_NOTIFY_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.setattr("telltale.embedded_process._process", None)
    with pytest.raises(ValueError, match="cannot read notify config"):
        telltale.init(run="bad-notify", handle_sigterm=False)


def test_exit_without_close_waits_for_the_child_to_finish(tmp_path):
    proc = run_trainer(tmp_path, "process", "exit")
    assert proc.returncode == 0, proc.stderr
    assert not proc.child_alive  # the trainer waited for it
    assert stored_steps(tmp_path / "store") == set(range(1, 401))
    assert "run ended" in proc.stderr  # the end marker made it through, windows closed


@pytest.mark.parametrize("how", ["term"])
def test_sigterm_flushes_through_the_child(tmp_path, how):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env["TELLTALE_STORE_DIR"] = str(tmp_path / "store")
    env["PID_FILE"] = str(tmp_path / "pid")
    p = subprocess.Popen([sys.executable, "-c", TRAINER, "process", how], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "flushed"
    pid = int(open(tmp_path / "pid").read())
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    assert p.returncode == -signal.SIGTERM
    assert not alive(pid)  # the trainer waited for the child before dying of SIGTERM
    _, err = p.communicate(timeout=30)
    assert stored_steps(tmp_path / "store") == set(range(1, 401))
    assert "run ended" in err


KILL_CHILD = r"""
import json, os, signal, sys, time
import telltale
import telltale.embedded_process as ep

mon = telltale.init(run="kill-run", handle_sigterm=False)
for s in range(1, 101):
    mon.log({"loss": 1.0}, step=s)
assert mon.flush(10)
proc = ep._process
deadline = time.monotonic() + 20
while proc.stats()["processed"] < proc.written and time.monotonic() < deadline:
    time.sleep(0.01)
os.kill(proc.pid, signal.SIGKILL)
while proc.proc.poll() is None:  # gone for good: a zombie's threads may still hold the pipe
    time.sleep(0.01)
for s in range(101, 1101):
    mon.log({"loss": 1.0}, step=s)
t0 = time.monotonic()
mon.close()
print(json.dumps({**proc.stats(), "close_s": time.monotonic() - t0, **mon.stats()}))
"""


def test_a_killed_child_is_reported_once_and_the_trainer_goes_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env["TELLTALE_STORE_DIR"] = str(tmp_path / "store")
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout.splitlines()[-1])
    assert (st["dead"] or "").startswith("was killed by signal 9"), (st, proc.stderr)
    assert st["lost_events"] == 1001 and st["close_s"] < 5  # 1000 events + the end marker
    assert st["queued"] == 0 and st["dropped"] == 0
    assert proc.stderr.count("was killed by signal 9") == 1, proc.stderr
    assert "at least 1001 events" in proc.stderr  # the count, said at exit


WAIT = r"""
import sys, time
import telltale
import telltale.embedded_process as ep

mon = telltale.init(run="orphan-run", handle_sigterm=False)
for s in range(1, 401):
    mon.log({"loss": 1.0 + 0.01 * (s % 5)}, step=s, ts=1000.0 + s)
assert mon.flush(10)
print(ep._process.pid, flush=True)
time.sleep(60)
"""


def test_a_child_whose_trainer_is_killed_finishes_its_input_and_exits(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env["TELLTALE_STORE_DIR"] = str(tmp_path / "store")
    p = subprocess.Popen([sys.executable, "-c", WAIT], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    child = int(p.stdout.readline())
    p.kill()
    p.wait(10)
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the pipeline process outlived its trainer"
    assert stored_steps(tmp_path / "store") == set(range(1, 401))


FORK = r"""
import json, os, sys
import telltale

mon = telltale.init(run="parent-run", handle_sigterm=False)
for s in range(1, 201):
    mon.log({"loss": 1.0 + 0.01 * (s % 5)}, step=s, ts=1000.0 + s)
assert mon.flush(10)
pid = os.fork()
if pid == 0:  # e.g. a DataLoader worker that logs on its own
    os.environ["TELLTALE_STORE_DIR"] = sys.argv[1]
    m = telltale.init(run="forked-run", handle_sigterm=False)
    for s in range(1, 201):
        m.log({"loss": 2.0}, step=s, ts=1000.0 + s)
    sys.exit(0)  # its own pipeline process is flushed at its exit
for s in range(201, 401):
    mon.log({"loss": 1.0 + 0.01 * (s % 5)}, step=s, ts=1000.0 + s)
assert os.waitpid(pid, 0)[1] == 0
mon.close()
"""


def test_a_forked_trainer_gets_its_own_child_and_the_parents_stream_stays_whole(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env["TELLTALE_STORE_DIR"] = str(tmp_path / "parent")
    proc = subprocess.run([sys.executable, "-c", FORK, str(tmp_path / "forked")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stored_steps(tmp_path / "parent") == set(range(1, 401))
    assert stored_steps(tmp_path / "forked") == set(range(1, 201))
    assert "killed" not in proc.stderr and "lost" not in proc.stderr, proc.stderr
