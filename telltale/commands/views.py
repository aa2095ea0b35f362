"""What people look at: ``telltale ui`` (the live dashboard) and ``telltale report`` (one
run as a self-contained HTML file)."""

from __future__ import annotations

import os
import sys
import time

from telltale.commands.flags import INFLUX, STORE, UI_ADDRESS
from telltale.config import Config, add_flag, from_args
from telltale.extras import require


def add(sub) -> None:
    u = sub.add_parser("ui", parents=[UI_ADDRESS, INFLUX],
                       help="live dashboard on 127.0.0.1: runs, charts, alerts",
                       description="Serve the live dashboard. Data comes from InfluxDB when "
                       "--influx-url / TELLTALE_INFLUX_URL is set, else from the local store "
                       "(embedded mode; the demo's store when the default one is empty).")
    add_flag(u, "store_dir", "local store to show (default telltale-data, or "
             "telltale-data/demo after 'telltale demo')")
    u.set_defaults(func=cmd_ui)

    rp = sub.add_parser("report", parents=[STORE, INFLUX],
                        help="one run as a self-contained HTML report (--png too)",
                        description="Write one run's summary, charts and alerts as a single "
                        "HTML file that opens with no server. Data: --events FILE (run "
                        "through the embedded pipeline), else InfluxDB or the local store "
                        "as for 'telltale ui'.")
    rp.add_argument("run", help="run id")
    rp.add_argument("--out", help="HTML file (default report-RUN.html)")
    rp.add_argument("--png", action="store_true",
                    help="also one PNG per panel in OUT-png/ (headless Chromium)")
    rp.add_argument("--events", help="JSONL events file (the trainfaults format)")
    rp.add_argument("--k", default="3", help="band width: mean ± k·std, 0 < k ≤ 20 (default 3)")
    add_flag(rp, "windows", "window specs (with --events)")
    rp.set_defaults(func=cmd_report)


def _ui_source(args):
    """InfluxDB when --influx-url / TELLTALE_INFLUX_URL is set (and no --store-dir), else
    the local store (the demo's when the default store holds no runs of its own)."""
    from telltale.ui.sources import InfluxSource, LocalSource

    cfg = from_args(args)
    if cfg.influx_url and not getattr(args, "store_dir", None):
        return InfluxSource(cfg)
    store = args.store_dir or cfg.store_dir
    if not args.store_dir and not os.path.exists(os.path.join(store, "metrics.jsonl")):
        demo = os.path.join(store, "demo")
        if os.path.exists(os.path.join(demo, "metrics.jsonl")):
            store = demo
    return LocalSource(store)


def _ui_guard(args):
    """The dashboard's Host check and auth from --auth-token-file / --basic-auth-file /
    --allow-host; ValueError when --host reaches beyond loopback without an auth option."""
    from telltale.ui.server import Guard, needs_auth, read_secret_file

    if args.auth_token_file and args.basic_auth_file:
        raise ValueError("give one of --auth-token-file and --basic-auth-file, not both")
    token = read_secret_file(args.auth_token_file, "--auth-token-file") \
        if args.auth_token_file else None
    basic = read_secret_file(args.basic_auth_file, "--basic-auth-file") \
        if args.basic_auth_file else None
    guard = Guard(token=token, basic=basic, allowed_hosts=args.allow_host or ())
    if needs_auth(args.host) and guard.auth is None:
        raise ValueError(f"--host {args.host} would serve the dashboard, and whatever its "
                         "InfluxDB credentials can read, to other machines without a password: "
                         "add --auth-token-file FILE (a random token) or --basic-auth-file FILE "
                         "(user:password), or keep the default --host 127.0.0.1")
    return guard


def start_ui(args, store_dir=None):
    """Serve the dashboard in a thread (``store_dir``: that local store); returns the
    server. ValueError for unsafe address/auth flags."""
    require("ui", "the dashboard")
    from telltale.ui.server import UiServer
    from telltale.ui.sources import LocalSource

    guard = _ui_guard(args)
    source = LocalSource(store_dir) if store_dir else _ui_source(args)
    server = UiServer(source, host=args.host, port=args.port, guard=guard).start()
    how = {"token": f" (needs the token: open {server.url}?token=<the token in "
                    f"{args.auth_token_file}> once)",
           "basic": " (needs the user and password of --basic-auth-file)"}.get(guard.auth, "")
    print(f"dashboard: {server.url} ({source.describe()}){how}", flush=True)
    return server


def start_ui_or_say(args, command: str, store_dir=None):
    """:func:`start_ui`, or (None, exit code) after saying why on stderr: 2 for unsafe
    address/auth flags, 1 when the address cannot be served."""
    try:
        return start_ui(args, store_dir), 0
    except ValueError as exc:
        print(f"telltale {command}: {exc}", file=sys.stderr)
        return None, 2
    except OSError as exc:
        print(f"telltale {command}: {exc}", file=sys.stderr)
        return None, 1


def cmd_ui(args) -> int:
    server, rc = start_ui_or_say(args, "ui")
    if server is None:
        return rc
    print("open it in a browser; Ctrl-C stops the server", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _view_from_events(path: str, run: str, cfg: Config, k: float) -> dict:
    """Run the embedded pipeline over an events file; the view of ``run``."""
    from telltale.sinks.memory import MemoryStore
    from telltale.streams.embedded import EmbeddedDriver
    from telltale.ui.data import DataError, build_view

    if not os.path.isfile(path):
        raise DataError(f"no events file {path}")
    store = MemoryStore()
    pipe = EmbeddedDriver(cfg, store)
    pipe.feed(path, lambda done: print(f"report: processing {path}: {done:.0%}, "
                                       f"{pipe.counts['events']} events", file=sys.stderr,
                                       flush=True))
    pipe.close()
    if run not in store.points:
        runs = ", ".join(sorted(store.points)) or "none"
        raise DataError(f"run {run!r} is not in {path} (runs there: {runs})")
    return build_view(run, store.points[run], store.alerts.get(run, []), k=k)


def cmd_report(args) -> int:
    if args.png:
        require("browser", "telltale report --png")
    from telltale.ui.data import DataError, parse_k
    from telltale.ui.report import render_html, write_pngs

    out = args.out or f"report-{args.run}.html"
    try:
        args.k = parse_k(args.k)
    except ValueError as exc:
        print(f"telltale report: --k: {exc}", file=sys.stderr)
        return 2
    try:
        if args.events:
            view = _view_from_events(args.events, args.run, from_args(args), args.k)
            source = f"events file {args.events}"
        else:
            src = _ui_source(args)
            source = src.describe()
            view = src.run_view(args.run, k=args.k)
            if view is None:
                names = ", ".join(sorted(r["run"] for r in src.runs())) or "none"
                raise DataError(f"no run {args.run!r} in {source} (runs there: {names}); "
                                "--events FILE reads a file of events instead")
    except DataError as exc:
        print(f"telltale report: {exc}", file=sys.stderr)
        return 2
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(render_html(view, source))
    except OSError as exc:
        print(f"telltale report: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    s = view["summary"]
    print(f"report: {args.run}: steps {s['first_step']}-{s['last_step']}, "
          f"{len(view['alerts'])} alerts -> {out}", file=sys.stderr)
    if args.png:
        png_dir = out.rsplit(".", 1)[0] + "-png"
        print("report: rendering one PNG per panel in headless Chromium...", file=sys.stderr,
              flush=True)
        try:
            paths = write_pngs(out, png_dir)
        except RuntimeError as exc:
            print(f"telltale report: --png: {exc}", file=sys.stderr)
            return 1
        print(f"report: {len(paths)} PNGs -> {png_dir}/", file=sys.stderr)
    return 0
