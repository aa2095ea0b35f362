"""Fixtures: the real Kafka and InfluxDB (started by scripts/services.sh) and workers.

The helpers behind them live in ``tests.support``; test modules import those, not this file.
"""

from __future__ import annotations

import signal

import pytest

from telltale.config import Config
from tests.support.services import isolated_config, start_services
from tests.support.workers import WorkerProcess

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A suite started as a background job (`cmd &`) inherits SIGINT ignored, and so would
    # every process it starts: the tests that stop them with Ctrl-C would hang. Children
    # get the default disposition back from this handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def services() -> dict:
    """Start (or reuse) the real services; fail loudly when they cannot start."""
    try:
        return start_services()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def kafka_config(services, tmp_path) -> Config:
    """A config with its own topics, consumer group and InfluxDB database."""
    return isolated_config(services, tmp_path / "worker")


@pytest.fixture
def start_worker(tmp_path):
    """``start(cfg, name)``: a worker in ``tmp_path/name``, stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(cfg: Config, name: str = "w0") -> WorkerProcess:
        w = WorkerProcess(cfg, tmp_path / name)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()
