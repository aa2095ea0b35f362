"""Flags several commands share, as argparse parent parsers; settings' flags come from
their declaration in :mod:`telltale.config`."""

from __future__ import annotations

import argparse

from telltale.config import add_flag, add_flags


def parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


KAFKA = parent()
add_flags(KAFKA, "kafka", "topic_prefix")

INFLUX = parent()
add_flags(INFLUX, "influx_url", "influx_db")

STORE = parent()
add_flag(STORE, "store_dir")

UI_ADDRESS = parent()
UI_ADDRESS.add_argument("--host", default="127.0.0.1", help="dashboard address (default "
                        "127.0.0.1; any other address needs --auth-token-file or "
                        "--basic-auth-file)")
UI_ADDRESS.add_argument("--port", type=int, default=8765,
                        help="dashboard port (default 8765; 0 = any free port)")
UI_ADDRESS.add_argument("--auth-token-file", help="require this file's token: open "
                        "/?token=TOKEN once (kept in a cookie) or send 'Authorization: "
                        "Bearer TOKEN'")
UI_ADDRESS.add_argument("--basic-auth-file", help="require HTTP basic auth, user:password "
                        "from this file")
UI_ADDRESS.add_argument("--allow-host", action="append", metavar="NAME",
                        help="a host name the dashboard answers to besides localhost and IP "
                        "addresses (the Host header is checked against DNS rebinding); "
                        "repeatable")
