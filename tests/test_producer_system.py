"""System metrics: real process numbers; GPU fields degrade cleanly without NVML or a GPU."""

import sys
import time

from telltale.producers import Monitor
from telltale.producers.system import GPUProbe, ProcessProbe, SystemSampler
from tests.support.transports import SwitchableTransport


def test_sampler_logs_cpu_rss_and_threads_in_the_background():
    t = SwitchableTransport()
    mon = Monitor("sys", t, linger=0.001)
    mon.log({"loss": 1.0}, step=42)
    SystemSampler(mon, interval=0.05).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(e.kind == "system" for e in t.delivered) < 3:
        x = sum(i * i for i in range(20000))  # some CPU to measure
        assert x
        time.sleep(0.01)
    mon.close()  # stops the sampler too
    sys_events = [e for e in t.delivered if e.kind == "system"]
    assert len(sys_events) >= 3
    m = sys_events[-1].metrics
    assert m["rss_mb"] > 10 and m["threads"] >= 2 and m["cpu_percent"] >= 0
    assert sys_events[0].step == 42
    assert not any(k.startswith("gpu") for e in sys_events for k in e.metrics)  # no GPU here


def test_without_nvidia_ml_py_there_are_no_gpu_fields(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    probe = GPUProbe()
    assert probe.devices == 0 and "not installed" in probe.reason and probe.sample() == {}


def test_with_nvidia_ml_py_but_no_gpu_nvml_errors_are_handled():
    import pynvml  # nvidia-ml-py, part of telltale[system] and [dev]

    assert pynvml.NVMLError
    probe = GPUProbe()  # the real library: no driver here, so NVMLError at init
    assert probe.devices == 0 and probe.reason.startswith(("NVML unavailable", "no GPU"))
    assert probe.sample() == {}
    probe.close()


def test_without_psutil_proc_and_os_times_are_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    probe = ProcessProbe()
    time.sleep(0.01)
    m = probe.sample()
    assert m["rss_mb"] > 10 and m["threads"] >= 1 and m["cpu_percent"] >= 0


class FakeNVML:
    """Stands in for the NVML library of a two-GPU machine (none here); device 1 fails."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUtilizationRates(self, h):
        if h == 1:
            raise self.NVMLError("GPU is lost")
        return type("U", (), {"gpu": 87})()

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("M", (), {"used": 3 * 2**30})()

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 71


def test_several_gpus_get_a_prefix_and_a_failing_device_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML())
    probe = GPUProbe()
    assert probe.devices == 2
    assert probe.sample() == {"gpu0_util": 87.0, "gpu0_mem_mb": 3072.0, "gpu0_temp_c": 71.0}
    probe.close()
