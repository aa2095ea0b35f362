"""Failover: from `kill -9` of a worker to the first alert after it, median of several kills.

    eval "$(bash scripts/services.sh start)"
    .venv/bin/python bench/failover.py                   # standby: 2 workers, 5 kills
    .venv/bin/python bench/failover.py --mode restart    # 1 worker, killed and restarted

Deterministic trainers (``--runs`` runs at ``--steps-per-s`` steps/s each, a 12x loss spike
every ``--spike-every`` steps after a warm-up) publish while the workers process. Each
round kills (SIGKILL) a worker that holds partitions of the metrics topic: ``standby``:
the other worker takes them over (a new standby is started after each round);
``restart``: a new worker process is started at once on the same data dir. Failover time
= the Kafka timestamp of the first alert record on a partition the killed worker held,
minus the time of the kill (alert records are keyed by run, as the metrics). Printed
beside the session timeout in force (TELLTALE_SESSION_TIMEOUT). At the end the alert
topic, de-duplicated by ``id:state:step``, must equal the alerts of the processor over
the same events in one process (what ``telltale detect`` computes), with each incident
firing once: nothing lost, no page twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/ for workload, the repo root for tests.support
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from workload import bench_config, load, median, start_worker  # noqa: E402

from telltale.config import Config  # noqa: E402
from telltale.records import record_key  # noqa: E402
from telltale.schema import decode_message, encode_batch  # noqa: E402
from telltale.streams.processor import RunProcessor  # noqa: E402
from telltale.streams.topics import ensure_topics  # noqa: E402
from tests.support.influx import drop_database  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

TARGET_S = 15.0


class Trainers(threading.Thread):
    """Paced, deterministic runs; every message sent is kept for the reference."""

    def __init__(self, cfg: Config, runs: int, steps_per_s: float, spike_every: int,
                 warmup: int):
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.cfg, self.runs, self.rate = cfg, runs, steps_per_s
        self.spike_every, self.warmup = spike_every, warmup
        self.prod = KafkaProducer(bootstrap_servers=cfg.kafka, acks="all", linger_ms=5)
        self.sent: list[tuple[str, bytes]] = []
        self.stop_ev = threading.Event()

    def run(self):
        rngs = [random.Random(r) for r in range(self.runs)]
        offsets = [random.Random(1000 + r).randrange(self.spike_every) for r in range(self.runs)]
        t0 = round(time.time() - 3600, 3)
        step, tick = 0, 1.0 / self.rate
        nxt = time.perf_counter()
        while not self.stop_ev.is_set():
            step += 1
            for r, rng in enumerate(rngs):
                run = f"fo-{r:02d}"
                loss = 1.0 + 0.05 * rng.gauss(0, 1)
                if step > self.warmup and (step + offsets[r]) % self.spike_every == 0:
                    loss *= 12
                ev = {"step": step, "ts": t0 + step * 0.05,
                      "metrics": {"loss": loss, "grad_norm": 1.0 + 0.05 * abs(rng.gauss(0, 1))}}
                msg = encode_batch(run, [ev])
                self.prod.send(self.cfg.metrics_topic, key=run.encode(), value=msg)
                self.sent.append((run, msg))
            nxt += tick
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.prod.flush(60)
        self.prod.close()


class AlertTail(threading.Thread):
    """(Kafka timestamp s, partition, record) of every record on the alert topic."""

    def __init__(self, cfg: Config):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.records: list[tuple[float, int, dict]] = []
        self.stop_ev = threading.Event()
        self.consumer = KafkaConsumer(cfg.alerts_topic, bootstrap_servers=cfg.kafka,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=20,
                                      consumer_timeout_ms=100)

    def run(self):
        while not self.stop_ev.is_set():
            for m in self.consumer:
                self.records.append((m.timestamp / 1000, m.partition, json.loads(m.value)))

    def first_after(self, t: float, partitions: set[int]) -> float | None:
        ts = [ts for ts, p, _ in list(self.records) if ts > t and p in partitions]
        return min(ts) if ts else None

    def close(self):
        self.stop_ev.set()
        self.join(5)
        self.consumer.close()


def reference(cfg: Config, sent) -> dict[str, str]:
    proc = RunProcessor(cfg)
    states, ref = {}, {}
    for run, msg in sent:
        events, _ = decode_message(msg)
        for a in proc.process(states.setdefault(run, proc.new_state(run)), events).alerts:
            ref[record_key(a)] = json.dumps(a, sort_keys=True)
    return ref


def assigned(workers) -> dict[WorkerProcess, list[int]]:
    return {w: w.status().get("assigned", []) for w in workers if w.proc.poll() is None}


def wait_settled(workers, n_parts: int, timeout: float = 90.0) -> None:
    """Until the live workers hold every partition between them, each some, for 3 s."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        a = assigned(workers)
        ok = sorted(p for ps in a.values() for p in ps) == list(range(n_parts)) \
            and all(a.values())
        if ok:
            since = since or time.monotonic()
            if time.monotonic() - since >= 3.0:
                return
        else:
            since = None
        time.sleep(0.2)
    sys.exit(f"workers did not settle in {timeout:.0f} s: {assigned(workers)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("standby", "restart"), default="standby")
    ap.add_argument("--kills", type=int, default=5, help="kills, median (5)")
    ap.add_argument("--runs", type=int, default=16, help="trainers (16)")
    ap.add_argument("--steps-per-s", type=float, default=20.0, help="per trainer (20)")
    ap.add_argument("--spike-every", type=int, default=40, help="steps (40)")
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args(argv)
    session = Config.from_env().session_timeout
    tmp = Path(tempfile.mkdtemp(prefix="telltale-failover-"))
    cfg = bench_config("fo", args.partitions, tmp)
    ensure_topics(cfg)
    print(f"failover bench ({args.mode}): {args.kills} kills, {args.runs} runs x "
          f"{args.steps_per_s:g} steps/s, session timeout {session:g} s; {load()}")
    n = 2 if args.mode == "standby" else 1
    workers = [start_worker(cfg, f"w{i}") for i in range(n)]
    for w in workers:
        w.wait_ready(90)
    tail = AlertTail(cfg)
    tail.start()
    trainers = Trainers(cfg, args.runs, args.steps_per_s, args.spike_every,
                        warmup=int(10 * args.steps_per_s))
    trainers.start()
    wait_settled(workers, args.partitions)
    deadline = time.monotonic() + 120
    while not tail.records and time.monotonic() < deadline:  # warm-up: alerts flow
        time.sleep(0.5)
    if not tail.records:
        sys.exit("no alert before the first kill: see the worker logs in " + str(tmp))
    times, takeovers = [], []
    try:
        for k in range(args.kills):
            time.sleep(5.0)  # alerts flowing on every partition
            live = assigned(workers)
            victim = next(w for w in sorted(live, key=lambda w: str(w.data_dir)) if live[w])
            parts = set(live[victim])
            os.kill(victim.proc.pid, signal.SIGKILL)
            t_kill = time.time()
            victim.proc.wait(10)
            if args.mode == "restart":
                (victim.data_dir / "worker-status.json").unlink(missing_ok=True)  # the dead one's
                workers.append(start_worker(cfg, victim.data_dir.name))  # same data dir
            first = None
            t_owned = None
            while time.time() - t_kill < 90:
                first = tail.first_after(t_kill, parts)
                if t_owned is None and parts <= {p for w, ps in assigned(workers).items()
                                                  if w is not victim for p in ps}:
                    t_owned = time.time() - t_kill
                if first is not None:
                    break
                time.sleep(0.1)
            if first is None:
                print(f"  kill {k + 1}: no alert on partitions {sorted(parts)} 90 s after it")
                return 1
            times.append(first - t_kill)
            takeovers.append(t_owned if t_owned is not None else float("nan"))
            print(f"  kill {k + 1}: partitions {sorted(parts)}; first alert after "
                  f"{first - t_kill:.1f} s (taken over after "
                  f"{takeovers[-1]:.1f} s by worker status)")
            workers = [w for w in workers if w.proc.poll() is None]
            if args.mode == "standby":
                workers.append(start_worker(cfg, f"w{len(workers)}-{k}"))  # the next standby
            wait_settled(workers, args.partitions)
    finally:
        trainers.stop_ev.set()
        trainers.join(60)
        ref = reference(cfg, trainers.sent)
        got: dict[str, list[str]] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = {}
            for _, _, a in list(tail.records):
                got.setdefault(record_key(a), []).append(json.dumps(a, sort_keys=True))
            if got.keys() >= ref.keys():
                break
            time.sleep(1.0)
        time.sleep(2.0)
        tail.close()
        for w in workers:
            w.stop(60)
    got = {}
    for _, _, a in tail.records:
        got.setdefault(record_key(a), []).append(json.dumps(a, sort_keys=True))
    same = {k: v[0] for k, v in got.items()} == ref
    identical = all(len(set(v)) == 1 for v in got.values())
    firing = {}
    for v in got.values():
        a = json.loads(v[0])
        if a["state"] == "firing":
            firing[a["id"]] = firing.get(a["id"], 0) + 1
    once = bool(firing) and max(firing.values()) == 1
    dups = sum(len(v) - 1 for v in got.values())
    med = median(times)
    print(f"\n{len(trainers.sent)} events, {len(ref)} alert records expected, "
          f"{len(got)} distinct on the topic ({dups} re-sent identical copies); equal to "
          f"the processor's: {same}; each incident fired once: {once}; copies identical: "
          f"{identical}")
    print(f"failover ({args.mode}) kill -9 -> first alert: median {med:.1f} s, "
          f"max {max(times):.1f} s over {len(times)} kills (target <= {TARGET_S:g} s); "
          f"session timeout {session:g} s; takeover by status median "
          f"{median(takeovers):.1f} s; {load()}")
    drop_database(cfg)
    return 0 if same and once and identical and med <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
