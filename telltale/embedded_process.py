"""The embedded default in a child process: the trainer's process only encodes and writes bytes.

Without a broker, ``telltale.init()`` hands each encoded batch to :func:`shared_process`,
which starts ``python -m telltale.embedded_process`` once per process and writes the
batches to its stdin as frames (``<II`` key and payload lengths, key, payload; the first
frame carries the pickled :class:`~telltale.config.Config`). The child runs the same
embedded pipeline (:func:`telltale.embedded.shared_driver`): alerts go to the stderr it
inherits, results to the local store, notifications to the notify config. At end of input
(close, interpreter exit, SIGTERM, or the parent's death) it processes what is left,
closes the pipeline and exits. After each frame it writes the number of frames processed
so far to a second pipe, so a parent whose child died can count what was lost.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time

log = logging.getLogger("telltale")

_HEADER = struct.Struct("<II")  # key length, payload length
_ACK = struct.Struct("<Q")  # frames processed so far
PIPE_BYTES = 1 << 20  # asked of the kernel for the data pipe (Linux caps it at pipe-max-size)
CLOSE_SECONDS = 10.0  # the parent waits this long for the child to finish at close / exit
SIGTERM_SECONDS = 5.0  # ... and this long on SIGTERM
CHILD_TERM_SECONDS = 10.0  # a child sent SIGTERM keeps reading this long, then finishes


class PipelineProcess:
    """The parent's end: ``submit(key, payload)`` writes one batch to the child's pipe.

    A write waits at most ``timeout`` for room before its first byte (then it raises and
    the :class:`~telltale.producers.Monitor` keeps the batch and retries); a frame once
    started is always completed, so the stream never tears. When the child has died, the
    first write that notices says so once; later batches are counted and discarded.
    """

    def __init__(self, cfg, python: str | None = None):
        self.store_dir = getattr(cfg, "store_dir", None)
        read_end, self._fd = os.pipe()
        ack_read, ack_write = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(self._fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        except (ImportError, OSError):  # not Linux, or above the cap: the default size works
            pass
        paths = [p for p in sys.path if p]  # the child imports telltale as the parent does
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        try:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "telltale.embedded_process", str(ack_write)],
                stdin=read_end, pass_fds=(ack_write,), env=env)
        except BaseException:
            for fd in (self._fd, ack_read, ack_write):
                os.close(fd)
            raise
        finally:
            os.close(read_end)
        os.close(ack_write)
        self.pid = self.proc.pid
        self._acks = ack_read
        os.set_blocking(self._acks, False)
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLOUT)
        self.written = 0  # frames written after the config
        self.processed = 0  # frames the child says it processed
        self.lost_batches = 0  # written but never processed, or discarded after the death
        self.lost_events = 0  # events of the discarded batches
        self.dead: str | None = None  # what happened to the child, once it is gone
        self._closed = False
        config = pickle.dumps(cfg)
        self._write(_HEADER.pack(6, len(config)) + b"config" + config, CLOSE_SECONDS)

    def __repr__(self) -> str:
        return f"PipelineProcess(pid={self.pid}, written={self.written}, dead={self.dead!r})"

    def submit(self, key: bytes, payload: bytes, timeout: float = 1.0) -> None:
        """Write one batch for the child; raises ``TimeoutError`` if the pipe stays full."""
        frame = _HEADER.pack(len(key), len(payload)) + key + payload
        with self._lock:
            if self.dead is None and not self._closed:
                self._read_acks()
                try:
                    self._write(frame, timeout)
                except TimeoutError:
                    raise  # the Monitor keeps the batch and sends it again later
                except OSError:  # EPIPE: the child is gone
                    self._died()
                else:
                    self.written += 1
                    return
            self._discard(payload)

    def _write(self, frame: bytes, timeout: float | None) -> None:
        """Write the whole frame; before its first byte wait at most ``timeout``."""
        view = memoryview(frame)
        deadline = time.monotonic() + (timeout or 0.0)
        started = False
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            if n:
                view, started = view[n:], True
                continue
            left = deadline - time.monotonic()
            if not started and left <= 0:
                raise TimeoutError(f"the embedded pipeline process (pid {self.pid}) has not "
                                   f"read its input for {timeout:g} s")
            self._poll.poll(1000 * (left if not started else 1.0))
            if started and self.proc.poll() is not None:
                raise BrokenPipeError("the embedded pipeline process ended mid-batch")

    def _read_acks(self) -> None:
        try:
            data = os.read(self._acks, 1 << 16)
        except (BlockingIOError, OSError):
            return
        if len(data) >= _ACK.size:  # acks are written whole (8 bytes < PIPE_BUF)
            end = len(data) - len(data) % _ACK.size
            self.processed = _ACK.unpack_from(data, end - _ACK.size)[0]

    def _died(self) -> None:
        """Say once what happened to the child; count what it had not processed."""
        try:
            code = self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        self._read_acks()
        lost = max(0, self.written - self.processed)
        self.lost_batches += lost
        self.dead = _how(code)
        log.warning("telltale: the embedded pipeline process (pid %d) %s; %d batches it had "
                    "not processed are lost, and this process's later events are counted and "
                    "discarded (no alerts, nothing stored). Its error, if any, is above on "
                    "stderr; restart the trainer to monitor again.", self.pid, self.dead, lost)

    def _discard(self, payload: bytes) -> None:
        self.lost_batches += 1
        try:
            self.lost_events += len(json.loads(payload).get("events", ()))
        except (ValueError, AttributeError):
            pass

    def stats(self) -> dict:
        """Counters: frames written and processed, batches and events lost, the child's fate."""
        with self._lock:
            if not self._closed:
                self._read_acks()
            return {"pid": self.pid, "written": self.written, "processed": self.processed,
                    "lost_batches": self.lost_batches, "lost_events": self.lost_events,
                    "dead": self.dead}

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """End the child's input and wait up to ``timeout`` s for it to process what is
        left and exit; False if it is still running (it then finishes on its own)."""
        if not self._lock.acquire(timeout=timeout):  # a write stuck on a stalled child
            log.warning("telltale: the embedded pipeline process (pid %d) stopped reading; "
                        "not waiting for it", self.pid)
            return False
        try:
            if self._closed:
                return self.proc.poll() is not None
            self._closed = True
            os.close(self._fd)
        finally:
            self._lock.release()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("telltale: the embedded pipeline process (pid %d) is still processing "
                        "after %g s; it finishes on its own (results in %s)", self.pid,
                        timeout, self.store_dir)
            return False
        finally:
            self._read_acks()
        if code != 0 and self.dead is None:
            self._died()
        if self.lost_events or self.lost_batches:
            # events are counted only in batches discarded after the death was seen; a batch
            # the pipe took while the dying child still held it is a batch of unknown size
            events = f" (at least {self.lost_events} events)" if self.lost_events else ""
            log.warning("telltale: %d batches%s were not processed: the embedded pipeline "
                        "process (pid %d) had ended", self.lost_batches, events, self.pid)
        os.close(self._acks)
        return code == 0

    def _forget(self) -> None:
        """In a forked child of the trainer: drop the inherited pipe ends, touch nothing else
        (the pipeline process belongs to the parent)."""
        self._closed = True
        self.dead = self.dead or "belongs to the process this one was forked from"
        for fd in (self._fd, self._acks):
            try:
                os.close(fd)
            except OSError:
                pass


def _how(code: int | None) -> str:
    if code is None:
        return "stopped reading its input"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (the out-of-memory killer or a kill -9?)" if code == -signal.SIGKILL else ""
        return f"was killed by signal {-code} ({name}){hint}"
    return f"exited with code {code}"


# -- one child per process ------------------------------------------------------------

_lock = threading.Lock()
_process: PipelineProcess | None = None


def shared_process(cfg):
    """The process-wide pipeline process (started on first use, closed at exit and on
    SIGTERM); the in-thread pipeline if no child process can be started."""
    global _process
    with _lock:
        if _process is None:
            _check(cfg)
            try:
                _process = PipelineProcess(cfg)
            except (OSError, ValueError) as exc:  # e.g. no sys.executable, no pass_fds
                from telltale.embedded import shared_driver

                log.warning("telltale: cannot start the embedded pipeline process (%s); "
                            "running it in this process instead", exc)
                return shared_driver(cfg)
            atexit.register(_close_at_exit)
            from telltale.producers.signals import after_flush

            after_flush(lambda: _close_at_exit(SIGTERM_SECONDS))
        return _process


def _check(cfg) -> None:
    """Refuse at ``init()``, as the in-thread pipeline did, a store directory that cannot be
    made, bad windows, pipelines or alert policy, and a notify config that does not load
    (the child would only fail later)."""
    from telltale.private import makedirs
    from telltale.streams.processor import RunProcessor

    makedirs(cfg.store_dir)
    RunProcessor(cfg)  # a ConfigError naming the setting
    if cfg.notify_config:
        from telltale.sinks.delivery import NotifyConfig

        NotifyConfig.load(cfg.notify_config)


def _close_at_exit(timeout: float = CLOSE_SECONDS) -> None:
    from telltale.producers.client import _close_all

    _close_all()  # monitors first, so their last batches reach the child
    if _process is not None:
        _process.close(timeout)


def _after_fork() -> None:
    global _lock, _process
    _lock = threading.Lock()
    if _process is not None:
        _process._forget()
    _process = None  # an init() in the forked process starts its own pipeline process


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- the child --------------------------------------------------------------------------


def _frames(fd: int, parent: int):
    """(key, payload) frames from ``fd`` until end of input, or until the parent is gone
    (reparented) and nothing more arrives."""
    buf = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            if os.getppid() != parent:
                break
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= _HEADER.size:
            klen, plen = _HEADER.unpack_from(buf)
            end = _HEADER.size + klen + plen
            if len(buf) < end:
                break
            start = _HEADER.size + klen
            yield bytes(buf[_HEADER.size:start]), bytes(buf[start:end])
            del buf[:end]
    if buf:
        print(f"telltale: embedded pipeline: the trainer's process ended in the middle of a "
              f"batch ({len(buf)} bytes); that batch is lost", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the embedded pipeline over the frames on stdin; acknowledge on fd ``argv[0]``."""
    ack = int((argv if argv is not None else sys.argv[1:])[0])
    os.set_inheritable(ack, False)
    os.set_blocking(ack, False)
    fd = os.dup(0)  # not inherited by anything the pipeline starts (e.g. a notify command)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for sig in (signal.SIGINT, signal.SIGHUP):  # Ctrl-C, a closed terminal: the trainer
        signal.signal(sig, signal.SIG_IGN)  # flushes and exits, then our input ends

    def on_term(signum, frame):  # keep reading a while: the trainer is flushing to us
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(CHILD_TERM_SECONDS))

    def on_alarm(signum, frame):
        raise SystemExit(0)  # atexit still closes the pipeline and flushes the store

    signal.signal(signal.SIGTERM, on_term)
    frames = _frames(fd, os.getppid())
    first = next(frames, None)
    if first is None:
        return 0
    from telltale.embedded import shared_driver

    pipeline = shared_driver(pickle.loads(first[1])).pipeline  # closed at exit (atexit)
    try:
        pipeline.processor.pipelines.import_models()  # before the first batch, not in it
    except ImportError as exc:  # MissingExtra: its line says what to install
        log.warning("telltale: %s", exc)
    done = 0
    for key, payload in frames:
        try:
            pipeline.handle(key, payload)
        except Exception:  # a sink or callback failed: as the in-thread consumer does
            pipeline.counts["errors"] += 1
            log.exception("embedded pipeline: handling a message failed")
        done += 1
        try:
            os.write(ack, _ACK.pack(done))
        except OSError:  # full (the parent reads it at its next batch) or the parent is gone
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
