"""System metrics in a background thread: CPU %, RSS, threads, and GPUs through NVML.

CPU, memory and threads come from psutil (``telltale[system]``) or, without it, from
``/proc`` and ``os.times``. GPU utilisation, memory and temperature come from
nvidia-ml-py (``pynvml``) when it is installed and finds a GPU; otherwise the GPU fields
are simply absent (one debug line says why). With several GPUs the fields are prefixed
``gpu0_``, ``gpu1_``, ...
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("telltale")


class GPUProbe:
    """Reads NVML; ``devices == 0`` when the library or a GPU is missing."""

    def __init__(self):
        self.devices = 0
        self.reason = ""
        self._nvml = None
        self._handles: list = []
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        except pynvml.NVMLError as exc:
            self.reason = f"NVML unavailable: {exc}"
            return
        self._nvml, self.devices = pynvml, len(self._handles)
        if not self.devices:
            self.reason = "no GPU found"

    def sample(self) -> dict[str, float]:
        nv, out = self._nvml, {}
        if nv is None:
            return out
        for i, h in enumerate(self._handles):
            prefix = f"gpu{i}_" if self.devices > 1 else "gpu_"
            try:
                out[prefix + "util"] = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                out[prefix + "mem_mb"] = nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
                out[prefix + "temp_c"] = float(nv.nvmlDeviceGetTemperature(
                    h, nv.NVML_TEMPERATURE_GPU))
            except nv.NVMLError as exc:  # a device that went away: skip it this time
                log.debug("telltale: NVML read of GPU %d failed: %s", i, exc)
        return out

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None


class ProcessProbe:
    """CPU % (of one core, since the last sample), RSS in MB and thread count."""

    def __init__(self):
        try:
            import psutil

            self._proc = psutil.Process()
            self._proc.cpu_percent(None)  # start the interval
        except ImportError:
            self._proc = None
            self._last = (time.monotonic(), sum(os.times()[:2]))

    def sample(self) -> dict[str, float]:
        p = self._proc
        if p is not None:
            with p.oneshot():
                return {"cpu_percent": float(p.cpu_percent(None)),
                        "rss_mb": p.memory_info().rss / 2**20,
                        "threads": float(p.num_threads())}
        now, cpu = time.monotonic(), sum(os.times()[:2])
        t0, c0 = self._last
        self._last = (now, cpu)
        out = {"cpu_percent": 100.0 * (cpu - c0) / max(now - t0, 1e-9),
               "threads": float(threading.active_count())}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out["rss_mb"] = int(line.split()[1]) / 1024
                    elif line.startswith("Threads:"):
                        out["threads"] = float(line.split()[1])
        except OSError:
            pass
        return out


class SystemSampler:
    """Logs system metrics (kind ``system``) on a monitor every ``interval`` seconds."""

    def __init__(self, monitor, interval: float = 10.0, gpu: bool = True):
        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        self.monitor, self.interval = monitor, interval
        self.process = ProcessProbe()
        self.gpu = GPUProbe() if gpu else None
        if self.gpu is not None and not self.gpu.devices:
            log.debug("telltale: no GPU metrics (%s)", self.gpu.reason)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"telltale-system-{monitor.run}")

    def sample(self) -> dict[str, float]:
        out = self.process.sample()
        if self.gpu is not None:
            out.update(self.gpu.sample())
        return out

    def start(self) -> SystemSampler:
        self.monitor._extras.append(self)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.monitor.log(self.sample(), step=self.monitor.step, kind="system")
            except Exception as exc:  # never let sampling kill the thread or the trainer
                log.debug("telltale: system sample failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if self.gpu is not None:
            self.gpu.close()
