"""What may leave the process: allow-listed tags, allowed metric names, hooks for text.

Metric values must be numbers. Text never ships raw: a string metric value goes through
the ``text`` hook, which by default drops it (counted as ``redacted`` in
``Monitor.stats()``); :func:`text_length` is a hook that keeps only the length. Tags
outside the allow-list are dropped (counted); tags named in ``hash_tags`` are allowed and
their values replaced by :func:`hash_text` with a salt: by default a random one made once
per deployment and kept in a 0600 file (:func:`load_salt`), so common values cannot be
looked up in a table of hashes. With a metric-name policy (``metric_names`` globs and/or a
``metric_pattern`` regex), metrics with any other name are dropped before encoding and
counted (``dropped_metrics``), their names never shown: a name can carry a secret too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable

from telltale.config import DEFAULT_ALLOWED_TAGS
from telltale.schema import MAX_NAME_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS_PER_EVENT

TextHook = Callable[[str, str], "dict[str, float] | None"]


def hash_text(text: str, salt: str = "") -> str:
    """A short stable digest of ``text`` (sha256, 16 hex digits); ``salt`` makes it private."""
    return hashlib.sha256((salt + text).encode("utf-8", "replace")).hexdigest()[:16]


def load_salt(path: str) -> str:
    """The salt kept in ``path``; a new random one (0600, in a 0700 folder) if it is missing."""
    from telltale.private import makedirs, open_private

    try:
        with open(path) as f:
            salt = f.read().strip()
        if salt:
            return salt
    except FileNotFoundError:
        pass
    makedirs(os.path.dirname(os.path.abspath(path)))
    try:
        with open_private(path, "x") as f:  # two ranks starting at once: one of them writes
            f.write(secrets.token_hex(32) + "\n")
    except FileExistsError:
        pass
    with open(path) as f:
        salt = f.read().strip()
    if not salt:
        raise ValueError(f"the hash salt file {path} is empty")
    return salt


class MetricNamePolicy:
    """Allowed metric names: any of the ``names`` globs, or a full match of ``pattern``."""

    def __init__(self, names: Iterable[str] | None = None, pattern: str | None = None):
        self.names = tuple(names or ())
        self.exact = frozenset(n for n in self.names if not any(c in n for c in "*?["))
        self.globs = tuple(n for n in self.names if n not in self.exact)
        try:
            self.pattern = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise ValueError(f"metric name pattern {pattern!r} is not a regular expression: "
                             f"{exc}") from None

    def allows(self, name: str) -> bool:
        return (name in self.exact or any(fnmatch.fnmatchcase(name, g) for g in self.globs)
                or (self.pattern is not None and self.pattern.fullmatch(name) is not None))


def drop_text(name: str, text: str) -> None:
    """The default text hook: ship nothing."""
    return None


def text_length(name: str, text: str) -> dict[str, float]:
    """A text hook that ships only the length: ``<name>_chars``."""
    return {f"{name}_chars": float(len(text))}


class Privacy:
    """Tag allow-list, tag hashing, the text hook and the metric-name policy, applied off the
    trainer's thread. ``salt=None`` with ``hash_tags``: the salt of ``salt_file``."""

    def __init__(self, allowed_tags: Iterable[str] = DEFAULT_ALLOWED_TAGS,
                 hash_tags: Iterable[str] = (), text: TextHook = drop_text,
                 salt: str | None = None, salt_file: str | None = None,
                 metric_names: Iterable[str] | None = None, metric_pattern: str | None = None):
        self.hash_tags = frozenset(hash_tags)
        self.allowed_tags = frozenset(allowed_tags) | self.hash_tags
        if salt is None and self.hash_tags:
            from telltale.config import Config

            salt = load_salt(salt_file or Config.from_env().hash_salt_file)
        self.text, self._salt = text, salt or ""
        self.names = MetricNamePolicy(metric_names, metric_pattern) \
            if metric_names or metric_pattern else None
        self.dropped_tags: set[str] = set()
        self.dropped_metrics = 0

    @property
    def salt(self) -> str:
        return self._salt

    def __repr__(self) -> str:  # never shows the salt
        return (f"Privacy(allowed_tags={sorted(self.allowed_tags)}, "
                f"hash_tags={sorted(self.hash_tags)}, metric_policy={self.names is not None})")

    def tags(self, tags: dict) -> dict[str, str]:
        """Keep allow-listed tags (as strings, hashed where asked); remember dropped names."""
        out: dict[str, str] = {}
        for k, v in tags.items():
            k = str(k)
            if k not in self.allowed_tags or len(out) >= MAX_TAGS_PER_EVENT:
                self.dropped_tags.add(k)
                continue
            v = str(v)
            out[k] = hash_text(v, self._salt) if k in self.hash_tags else v[:MAX_TAG_VALUE_LEN]
        return out

    def metrics(self, metrics: dict) -> tuple[dict, int, int]:
        """Numbers as floats; text through the hook; names outside the policy dropped
        (counted in ``dropped_metrics``); returns (metrics, redacted, invalid)."""
        out: dict = {}
        redacted = invalid = 0
        for k, v in metrics.items():
            if type(v) is float or (type(v) is int):
                out[k] = v
            elif isinstance(v, str):
                redacted += 1
                extra = self.text(k, v)
                if extra:
                    out.update(extra)
            elif isinstance(v, bool):
                out[k] = float(v)
            else:
                try:
                    out[k] = float(v.item() if hasattr(v, "item") else v)
                except (TypeError, ValueError, RuntimeError):
                    invalid += 1
                    continue
            if not isinstance(k, str) or not k or len(k) > MAX_NAME_LEN:
                out.pop(k, None)
                invalid += 1
        if self.names is not None:
            for k in [k for k in out if not (isinstance(k, str) and self.names.allows(k))]:
                del out[k]
                self.dropped_metrics += 1
        return out, redacted, invalid
