"""The optional extras (pyproject's ``[project.optional-dependencies]``): which modules each
brings, and one line saying which to install when one is missing."""

from __future__ import annotations

import importlib.util

# the modules a command imports from each extra (not every package the extra installs)
EXTRAS = {
    "worker": ("faust", "influxdb_client", "sklearn"),
    "ui": ("aiohttp",),
    "browser": ("selenium",),
    "system": ("psutil",),
    "torch": ("torch",),
    "fast": ("confluent_kafka", "orjson"),
}


class MissingExtra(ImportError):
    """An optional extra is not installed; the message names it and how to install it."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a half-imported module
        return False


def require(extra: str, who: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtra` unless ``modules`` (default: all of ``extra``'s) are
    installed; ``who`` is what needs them, e.g. ``"telltale worker"``."""
    for module in modules or EXTRAS[extra]:
        if not _installed(module):
            raise MissingExtra(f"{who} needs the {extra} extra (no module {module!r}): "
                               f"pip install 'telltale[{extra}]'")


def extra_of(module: str | None) -> str | None:
    """The extra that brings ``module`` (a dotted name: its top level counts), if any."""
    top = (module or "").split(".")[0]
    return next((e for e, mods in EXTRAS.items() if top in mods), None)
