"""Shared pieces of the Kafka-mode benchmarks (throughput, latency, soak).

A topic pre-loaded by Telltale's own producer (Monitor + KafkaTransport), a raw aiokafka
drain (decode only: the practical limit of a Python consumer), `telltale worker`
subprocesses (the tests' :class:`~tests.support.workers.WorkerProcess`), and read-back from
InfluxDB. Needs the real services (``eval "$(bash scripts/services.sh start)"``) and the repo
root on ``sys.path`` (for ``tests.support``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from telltale.config import Config
from telltale.producers import KafkaTransport, Monitor
from telltale.schema import decode_message, encode_batch
from telltale.simulate import RunMix, SimRun, simulate  # noqa: F401 (RunMix: re-exported)
from telltale.streams.topics import ensure_topics
from tests.support.workers import WorkerProcess


def bench_config(tag: str, partitions: int, data_root: Path) -> Config:
    """A config with its own topics, consumer group and InfluxDB database."""
    kafka = os.environ.get("TELLTALE_KAFKA")
    influx = os.environ.get("TELLTALE_INFLUX_URL")
    if not kafka or not influx:
        sys.exit("set TELLTALE_KAFKA and TELLTALE_INFLUX_URL, e.g.\n"
                 '  eval "$(bash scripts/services.sh start)"')
    name = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
    return Config(kafka=kafka, influx_url=influx, topic_prefix=name, app_id=f"{name}-w",
                  influx_db=name.replace("-", "_"), data_dir=str(data_root / name),
                  partitions=partitions)


def with_group(cfg: Config, suffix: str) -> Config:
    """Same topics, a fresh consumer group and InfluxDB database."""
    from dataclasses import replace

    return replace(cfg, app_id=f"{cfg.topic_prefix}-{suffix}",
                   influx_db=f"{cfg.topic_prefix}_{suffix}".replace("-", "_"),
                   data_dir=str(Path(cfg.data_dir).parent / f"{cfg.topic_prefix}-{suffix}"))


def sim_events(run: str, steps: int, seed: int, fault: str | None = None, t0: float = 1.7e9):
    """(step, ts, metrics) of one simulated training run (finite values only)."""
    sim = SimRun(run, fault, steps // 2 if fault else None, steps=steps, seed=seed,
                 eval_every=10**9)
    for step, ts, _kind, metrics in simulate(sim, t0=t0, dt=0.05):
        yield step, ts, metrics


def preload(cfg: Config, events: int, runs: int, progress=print) -> tuple[int, int]:
    """Publish ``events`` events over ``runs`` runs with Telltale's producer (each run
    ends with its ``end`` event); returns (events incl. ends, metric values) sent."""
    ensure_topics(cfg)
    per_run = events // runs
    values = 0
    mons = []
    t0 = time.perf_counter()
    for r in range(runs):
        mon = Monitor(f"run-{r:03d}", KafkaTransport(cfg.kafka, cfg.metrics_topic),
                      max_queue=per_run + 10, batch_size=500, overflow="drop_newest")
        fault = "spike" if r % 4 == 1 else None
        for step, ts, metrics in sim_events(f"run-{r:03d}", per_run, seed=r, fault=fault):
            mon.log(metrics, step=step, ts=ts)
            values += len(metrics)
        mons.append(mon)
        progress(f"  preload: run {r + 1}/{runs} queued ({(r + 1) * per_run} events, "
                 f"{time.perf_counter() - t0:.0f} s)")
    for mon in mons:
        mon.flush(600)
        mon.close()
        st = mon.stats()
        if st.get("dropped") or st.get("invalid"):
            sys.exit(f"producer dropped events: {st}")
    return per_run * runs + runs, values


async def _raw_drain(cfg: Config, keep: list | None) -> tuple[int, int, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka, enable_auto_commit=False,
                         max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await c.start()
    try:
        tps = [TopicPartition(cfg.metrics_topic, p) for p in range(cfg.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        left = {tp: end[tp] for tp in tps if end[tp] > 0}
        n_ev = n_val = 0
        t0 = None
        while left:
            batches = await c.getmany(timeout_ms=1000, max_records=5000)
            if t0 is None and batches:
                t0 = time.perf_counter()
            for tp, msgs in batches.items():
                for m in msgs:
                    evs, _rej = decode_message(m.value)
                    n_ev += len(evs)
                    for ev in evs:
                        n_val += len(ev.metrics)
                    if keep is not None:
                        keep.append(m.value)
                if msgs and msgs[-1].offset + 1 >= end[tp]:
                    left.pop(tp, None)
        return n_ev, n_val, time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await c.stop()


def raw_drain(cfg: Config, keep: list | None = None) -> tuple[int, int, float]:
    """Read and decode the whole metrics topic; (events, values, seconds first→last)."""
    return asyncio.run(_raw_drain(cfg, keep))


def start_worker(cfg: Config, name: str = "w0", profile: str | None = None) -> WorkerProcess:
    """A ``telltale worker`` in ``cfg.data_dir/name`` (under cProfile with ``profile``)."""
    return WorkerProcess(cfg, Path(cfg.data_dir) / name, profile)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def service_pids() -> dict[str, int]:
    """Kafka's and InfluxDB's pids from scripts/services.sh's pid files."""
    root = Path(__file__).resolve().parents[1] / ".services"
    out = {}
    for name, path in (("kafka", root / "kafka" / "kafka.pid"),
                       ("influxdb", root / "influx" / "influxd.pid")):
        try:
            out[name] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def drain_with_workers(cfg: Config, events: int, n: int = 1, timeout: float = 1800,
                       progress=print, cpu: dict | None = None,
                       profile: str | None = None) -> float:
    """Start ``n`` workers on a fresh group; seconds from the first processed event until
    all ``events`` are processed and every point is written (status polled every 0.1 s).
    ``cpu`` gets the CPU seconds each worker, Kafka and InfluxDB used meanwhile, and each
    worker's before its first processed event (``worker N start-up``: imports, joining);
    ``profile``: the (first) worker runs under cProfile, stats written there on exit."""
    workers = [start_worker(cfg, f"w{i}", profile=profile if i == 0 else None)
               for i in range(n)]
    svc = service_pids()
    svc0 = {k: cpu_seconds(p) for k, p in svc.items()}
    t_first = None
    last_print = time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for w in workers:
                w.check()
            sts = [w.status() for w in workers]
            done = sum(sum(s.get("runs", {}).values()) for s in sts)
            if done and t_first is None:
                t_first = time.perf_counter()
                if cpu is not None:
                    for i, w in enumerate(workers):
                        cpu[f"worker {i} start-up"] = cpu_seconds(w.proc.pid)
            pending = sum(s.get("influx", {}).get("pending", 0) for s in sts)
            if done >= events and pending == 0:
                if cpu is not None:
                    for i, w in enumerate(workers):
                        cpu[f"worker {i}"] = cpu_seconds(w.proc.pid)
                    for k, p in svc.items():
                        cpu[k] = cpu_seconds(p) - svc0[k]
                return time.perf_counter() - t_first
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                progress(f"  worker x{n}: {done}/{events} events")
            time.sleep(0.1)
        sys.exit(f"workers did not finish in {timeout} s")
    finally:
        for w in workers:
            w.stop(60)


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f}"


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def publish_mix(cfg: Config, mix: RunMix, events: int, rate: float | None = None,
                batch: int = 500, progress=print, stop=None) -> tuple[int, int]:
    """Publish ``events`` events of ``mix`` (round robin over live runs, ``batch`` events
    per message, the producer's wire format), paced at ``rate`` events/s if given;
    returns (events, metric values) sent."""
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=cfg.kafka, linger_ms=5, acks=1,
                         max_request_size=4 << 20, batch_size=1 << 20)
    sent = values = 0
    t_start = time.perf_counter()
    last = t_start
    i = 0
    t0 = 1.7e9
    try:
        while sent < events and not (stop and stop.is_set()):
            run, evs, _ = mix.batch(i % len(mix.live), batch, t0)
            i += 1
            prod.send(cfg.metrics_topic, key=run.encode(), value=encode_batch(run, evs))
            sent += len(evs)
            values += sum(len(e["metrics"]) for e in evs)
            if rate:
                ahead = sent / rate - (time.perf_counter() - t_start)
                if ahead > 0:
                    time.sleep(ahead)
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                progress(f"  published {sent:,} events ({mix.ended} runs ended)")
        prod.flush(120)
    finally:
        prod.close(10)
    return sent, values


def consumer_lag(cfg: Config) -> int | None:
    """Messages of the metrics topic not yet committed by the worker's consumer group."""
    from kafka import KafkaConsumer, TopicPartition

    cons = KafkaConsumer(bootstrap_servers=cfg.kafka, group_id=cfg.app_id,
                         enable_auto_commit=False)
    try:
        tps = [TopicPartition(cfg.metrics_topic, p) for p in range(cfg.partitions)]
        end = cons.end_offsets(tps)
        return sum(end[tp] - (cons.committed(tp) or 0) for tp in tps)
    except Exception:
        return None
    finally:
        cons.close()
