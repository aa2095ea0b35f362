"""Start-up: a wrong setting or a missing optional extra stops a command at once, with one
line that names the variable (or the extra to install), never a traceback."""

import json
import os
import subprocess
import sys

import pytest

from telltale.config import Config, ConfigError

# a subprocess in which importing the modules named in argv[1] fails, as when their extra
# is not installed; then `telltale ARGS...`
BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in sys.argv[1].split(","):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from telltale.cli import main
sys.exit(main(sys.argv[2:]))
"""


def telltale(*args, env=None, cwd=None, blocked=None):
    full = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    cmd = ([sys.executable, "-c", BLOCKED, blocked] if blocked
           else [sys.executable, "-m", "telltale"])
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


def one_line(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"run": "r", "step": 1, "ts": 1e9, "kind": "train",
                                "metrics": {"loss": 1.0}}) + "\n")
    return path


@pytest.mark.parametrize("var, value, says", [
    ("TELLTALE_PARTITIONS", "four", "TELLTALE_PARTITIONS='four' is not a whole number"),
    ("TELLTALE_WEB_PORT", "99999", "TELLTALE_WEB_PORT=99999 must be a port"),
    ("TELLTALE_RUN_IDLE_TTL", "-1", "TELLTALE_RUN_IDLE_TTL=-1.0 must be more than 0"),
    ("TELLTALE_METRIC_PATTERN", "(", "TELLTALE_METRIC_PATTERN='(' is not a regular expression"),
    ("TELLTALE_LOG_LEVEL", "loud", "TELLTALE_LOG_LEVEL='loud' is not one of"),
])
def test_a_wrong_setting_is_named_at_start_up(var, value, says, events, tmp_path):
    with pytest.raises(ConfigError, match=var):
        Config.from_env({var: value})
    out = tmp_path / "alerts.jsonl"
    line = one_line(telltale("detect", events, "--out", out, env={var: value}))
    assert says in line
    assert not out.exists()  # nothing ran


def test_a_wrong_flag_is_named_too(events):
    line = one_line(telltale("worker", "--kafka", "127.0.0.1:1", "--partitions", "x"))
    assert "--partitions='x' is not a whole number" in line


def test_bad_windows_and_policy_stop_commands_before_they_start(events, tmp_path):
    line = one_line(telltale("detect", events, "--windows", "step:100,steps:5"))
    assert "TELLTALE_WINDOWS" in line and "bad window 'steps:5'" in line
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"cooldwn": 10}))
    line = one_line(telltale("report", "r", "--events", events, "--out", tmp_path / "r.html",
                             env={"TELLTALE_ALERT_POLICY": str(policy)}))
    assert "TELLTALE_ALERT_POLICY" in line and "cooldwn" in line
    assert not (tmp_path / "r.html").exists()
    # the worker says so before it talks to Kafka (nothing listens at port 1)
    bad = tmp_path / "pipelines.json"
    bad.write_text("[[")
    line = one_line(telltale("worker", env={"TELLTALE_KAFKA": "127.0.0.1:1",
                                            "TELLTALE_PIPELINES": str(bad)}))
    assert "TELLTALE_PIPELINES" in line and str(bad) in line


def test_init_without_a_broker_checks_the_windows(tmp_path):
    # a process of its own: the embedded driver is one per process, built by the first init()
    proc = subprocess.run(
        [sys.executable, "-c", "import telltale; telltale.init('r', handle_sigterm=False)"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TELLTALE_WINDOWS": "time:0s",
             "TELLTALE_STORE_DIR": str(tmp_path)})
    assert proc.returncode != 0
    assert "telltale.config.ConfigError: TELLTALE_WINDOWS (--windows): bad window 'time:0s'" \
        in proc.stderr


@pytest.mark.parametrize("blocked, args, says", [
    ("faust", ["worker"], "telltale worker needs the worker extra (no module 'faust'): "
     "pip install 'telltale[worker]'"),
    ("aiohttp", ["ui", "--port", "0"], "telltale ui: the dashboard needs the ui extra "
     "(no module 'aiohttp'): pip install 'telltale[ui]'"),
    ("aiohttp", ["demo", "--ui", "--steps", "5", "--rate", "0"], "pip install 'telltale[ui]'"),
    ("selenium", ["report", "r", "--png", "--events", "EVENTS"],
     "telltale report --png needs the browser extra (no module 'selenium'): "
     "pip install 'telltale[browser]'"),
    # the run rules' models: without scikit-learn the embedded pipeline would fail quietly
    ("sklearn", ["demo", "--steps", "5", "--rate", "0"],
     "the embedded pipeline needs the worker extra (no module 'sklearn')"),
    ("sklearn", ["detect", "EVENTS"], "pip install 'telltale[worker]'"),
    ("sklearn", ["report", "r", "--events", "EVENTS"], "pip install 'telltale[worker]'"),
])
def test_a_missing_extra_is_one_line_naming_it(blocked, args, says, events, tmp_path):
    args = [str(events) if a == "EVENTS" else a for a in args]
    line = one_line(telltale(*args, blocked=blocked, cwd=tmp_path,
                             env={"TELLTALE_KAFKA": "127.0.0.1:1"} if "worker" in args else
                             {"TELLTALE_STORE_DIR": str(tmp_path)}))
    assert says in line
