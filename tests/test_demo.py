import json
import subprocess
import sys

from telltale.simulate import DEMO_RUNS, SERVE_RUN, simulate, simulate_serve, simulate_system


def test_demo_runs_embedded_and_reports(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no TELLTALE_* services
    proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0",
                           "--store-dir", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "progress: step 600/600" in out and "summary" in out and "events/s" in out
    alerts = [json.loads(x) for x in (tmp_path / "store" / "alerts.log.jsonl").open()]
    runs = {a["run"] for a in alerts}
    faulty = {r.run for r in (*DEMO_RUNS, SERVE_RUN) if r.fault}
    assert runs == faulty  # the clean run stays quiet
    tags = {"firing": "FIRING", "updated": "UPDATE", "resolved": "OK    "}
    for a in alerts:
        assert (f"[{a['severity'].upper():8}] {tags[a['state']]} {a['run']} step {a['step']}:"
                in out)
    for r in DEMO_RUNS:
        n = sum(a["run"] == r.run and a["state"] == "firing" for a in alerts)
        assert f"{r.run:14} incidents: {n}" in out
    # every incident the demo raised fired once and is resolved by the end of its run (an
    # incident re-opened by a related finding resolves again: its last record counts)
    last = {}
    for a in alerts:
        last[a["id"]] = a["state"]
    firing_ids = [a["id"] for a in alerts if a["state"] == "firing"]
    assert len(firing_ids) == len(set(firing_ids)) and set(firing_ids) == set(last)
    assert set(last.values()) == {"resolved"}
    metrics = (tmp_path / "store" / "metrics.jsonl").read_text().splitlines()
    n = sum(len(list(simulate(r))) + len(list(simulate_system(r))) for r in DEMO_RUNS)
    assert n == 4 * (600 + 30 + 120 * 4)  # train, eval, system events of 4 ranks every 5 steps
    assert len(metrics) == n + len(list(simulate_serve()))  # every event is stored
