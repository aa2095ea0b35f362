"""What the dashboard costs, against reading the same store with nothing else done.

    python bench/ui_bench.py [--repeat 15]

Makes the demo's local store (5 runs, flat out), then times, as medians of --repeat:
- baseline: json.loads of every line of every store file (what any reader must pay once);
- a cold /api/run view (new LocalSource: read every file, build the view of demo-spike);
- a poll with nothing new (the page's steady state every 2 s while a run is idle);
- GET /api/run/demo-spike over HTTP (aiohttp server, view + JSON encoding);
- a self-contained HTML report of demo-spike (render only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def median_time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    from telltale.ui.report import render_html
    from telltale.ui.server import UiServer
    from telltale.ui.sources import LocalSource

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        print("making the demo store (telltale demo --rate 0)...", flush=True)
        subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0", "--store-dir",
                        str(store)], check=True, capture_output=True)
        files = sorted(store.glob("*.jsonl"))
        lines = sum(1 for f in files for _ in f.open())
        mb = sum(f.stat().st_size for f in files) / 1e6

        def parse_all():
            for f in files:
                with f.open() as fh:
                    for line in fh:
                        json.loads(line)

        def cold():
            LocalSource(str(store)).run_view("demo-spike")

        warm_src = LocalSource(str(store))
        warm_src.run_view("demo-spike")
        server = UiServer(LocalSource(str(store)), port=0).start()
        url = server.url + "api/run/demo-spike"

        def http():
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()

        view = warm_src.run_view("demo-spike")
        rows = [
            ("baseline: json.loads every store line", median_time(parse_all, args.repeat)),
            ("cold view (read store + build)", median_time(cold, args.repeat)),
            ("poll, nothing new (build only)", median_time(
                lambda: warm_src.run_view("demo-spike"), args.repeat)),
            ("GET /api/run/demo-spike (HTTP)", median_time(http, args.repeat)),
            ("report HTML render", median_time(lambda: render_html(view), args.repeat)),
        ]
        server.stop()
        size = len(json.dumps(view)) / 1e3
        print(f"store: {len(files)} files, {lines} lines, {mb:.1f} MB; view of demo-spike "
              f"{size:.0f} kB JSON; median of {args.repeat}")
        base = rows[0][1]
        print(f"{'step':40} {'median ms':>10} {'× baseline':>11}")
        for name, t in rows:
            print(f"{name:40} {t * 1000:10.1f} {t / base:11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
