"""What may leave the process: allow-listed tags, and hooks for text.

Metric values must be numbers. Text never ships raw: a string metric value goes through
the ``text`` hook, which by default drops it (counted as ``redacted`` in
``Monitor.stats()``); :func:`text_length` is a hook that keeps only the length. Tags
outside the allow-list are dropped (counted); tags named in ``hash_tags`` are allowed and
their values replaced by :func:`hash_text`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from telltale.config import DEFAULT_ALLOWED_TAGS
from telltale.schema import MAX_NAME_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS_PER_EVENT

TextHook = Callable[[str, str], "dict[str, float] | None"]


def hash_text(text: str, salt: str = "") -> str:
    """A short stable digest of ``text`` (sha256, 16 hex digits); ``salt`` makes it private."""
    return hashlib.sha256((salt + text).encode("utf-8", "replace")).hexdigest()[:16]


def drop_text(name: str, text: str) -> None:
    """The default text hook: ship nothing."""
    return None


def text_length(name: str, text: str) -> dict[str, float]:
    """A text hook that ships only the length: ``<name>_chars``."""
    return {f"{name}_chars": float(len(text))}


class Privacy:
    """Tag allow-list, tag hashing and the text hook, applied off the trainer's thread."""

    def __init__(self, allowed_tags: Iterable[str] = DEFAULT_ALLOWED_TAGS,
                 hash_tags: Iterable[str] = (), text: TextHook = drop_text, salt: str = ""):
        self.hash_tags = frozenset(hash_tags)
        self.allowed_tags = frozenset(allowed_tags) | self.hash_tags
        self.text, self.salt = text, salt
        self.dropped_tags: set[str] = set()

    def tags(self, tags: dict) -> dict[str, str]:
        """Keep allow-listed tags (as strings, hashed where asked); remember dropped names."""
        out: dict[str, str] = {}
        for k, v in tags.items():
            k = str(k)
            if k not in self.allowed_tags or len(out) >= MAX_TAGS_PER_EVENT:
                self.dropped_tags.add(k)
                continue
            v = str(v)
            out[k] = hash_text(v, self.salt) if k in self.hash_tags else v[:MAX_TAG_VALUE_LEN]
        return out

    def metrics(self, metrics: dict) -> tuple[dict, int, int]:
        """Numbers as floats; text through the hook; returns (metrics, redacted, invalid)."""
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
        return out, redacted, invalid
