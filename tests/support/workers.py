"""``telltale worker`` subprocesses, each with its own data dir and log file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from telltale.config import Config
from tests.support.services import config_env


class WorkerProcess:
    """A ``telltale worker`` subprocess in ``data_dir`` (its log: ``data_dir/worker.log``);
    with ``profile`` it runs under cProfile and writes its stats there on exit."""

    def __init__(self, cfg: Config, data_dir: Path, profile: str | None = None):
        self.cfg, self.data_dir = cfg, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "worker.log"
        env = config_env(cfg)
        env["TELLTALE_DATA_DIR"] = str(data_dir)
        cmd = [sys.executable, "-m", "telltale", "worker"]
        if profile:
            cmd[1:1] = ["-m", "cProfile", "-o", profile]
        self.proc = subprocess.Popen(cmd, cwd=data_dir, env=env,
                                     stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        """AssertionError with the log when the worker has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n"
                                 f"{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready = the agent is running and holds some partitions of the metrics topic."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if self.status().get("assigned"):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def status(self) -> dict:
        """The worker's ``worker-status.json`` ({} until it writes one)."""
        try:
            return json.loads((self.data_dir / "worker-status.json").read_text())
        except (OSError, ValueError):
            return {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (NaN when /proc does not say)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan
