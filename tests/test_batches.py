"""The worker's processing loop: messages queued per run, a run at a time, in the order
the runs' oldest messages came; the same outputs however the messages were cut."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from telltale.config import Config
from telltale.schema import encode_batch
from telltale.simulate import SimRun, simulate
from telltale.streams.batches import BatchHandler, RunQueue
from telltale.streams.processor import RunProcessor


def _event(value: bytes = b"{}", partition: int = 0, offset: int = 0, key: bytes = b"r"):
    return SimpleNamespace(value=value, key=key, message=SimpleNamespace(
        partition=partition, offset=offset, timestamp=0.0))


def test_the_run_that_waited_longest_goes_first_with_all_its_messages():
    q = RunQueue()
    q.add("a", [_event(offset=0), False, [1]])
    q.add("b", [_event(offset=1), False, [2]])
    q.add("a", [_event(offset=2), False, [3]])
    assert len(q) == 3
    run, items, _ = q.take()
    assert run == "a" and [evs for _, _, evs in items] == [[1], [3]]
    q.add("a", [_event(offset=3), False, [4]])  # came after b's: behind it
    assert [q.take()[0], q.take()[0]] == ["b", "a"]
    assert len(q) == 0 and q.bytes == 0 and not q.runs


def test_messages_of_revoked_partitions_leave_the_queue():
    q = RunQueue()
    q.add("a", [_event(partition=0), False, [1]])
    q.add("a", [_event(partition=1), False, [2]])
    q.add("b", [_event(partition=1), False, [3]])
    q.forget({1})
    assert list(q.runs) == ["a"] and len(q) == 1 and q.bytes == 2
    assert [evs for _, _, evs in q.take()[1]] == [[1]]


class _Outputs:
    """What the handler sends, recorded (the Kafka topics are the pipeline tests')."""

    def __init__(self):
        self.alerts, self.dead, self.points = [], [], 0

    async def emit(self, run, key, out):
        self.alerts += out.alerts
        self.points += len(out.points) + sum(len(b) for b in out.blocks)

    async def dead_letter(self, key, rejected):
        self.dead.append(rejected.reason)


def _messages(runs: int, steps: int, per: int) -> list[SimpleNamespace]:
    """Messages of ``per`` events of each run, the runs' messages interleaved."""
    by_run = []
    for r in range(runs):
        sim = SimRun(f"run-{r}", "spike", steps // 2, steps=steps, seed=r, eval_every=10**9)
        evs = [{"step": s, "ts": ts, "metrics": m} for s, ts, _k, m in simulate(sim, dt=0.05)]
        by_run.append([encode_batch(f"run-{r}", evs[i:i + per])
                       for i in range(0, len(evs), per)])
    out, offset = [], 0
    for i in range(max(len(m) for m in by_run)):
        for r, msgs in enumerate(by_run):
            if i < len(msgs):
                out.append(_event(msgs[i], partition=r % 2, offset=offset, key=f"run-{r}".encode()))
                offset += 1
    return out


def _handle(messages, chunks: int) -> tuple[_Outputs, BatchHandler]:
    """The messages through a handler, taken by the agent in ``chunks`` parts."""
    from telltale.streams.checkpoint import Checkpointer

    async def go():
        ck = Checkpointer({}, None, None)
        outputs = _Outputs()
        h = BatchHandler(Config(), RunProcessor(Config()), ck, outputs, {})
        size = -(-len(messages) // chunks)
        for i in range(0, len(messages), size):
            for m in messages[i:i + size]:
                h.add(m)
            await h.process_all()
        return outputs, h

    return asyncio.run(go())


def test_the_same_outputs_however_the_agent_takes_the_messages():
    msgs = _messages(runs=3, steps=600, per=25)
    msgs.insert(5, _event(b"not json", partition=1, offset=10_000))
    one, h1 = _handle(msgs, 1)
    many, h2 = _handle(msgs, 9)
    def per_run(alerts):  # each run's records in order (runs interleave as they come)
        return {r: [(a["id"], a["state"], a["step"]) for a in alerts if a["run"] == r]
                for r in {a["run"] for a in alerts}}

    assert one.alerts and per_run(one.alerts) == per_run(many.alerts)
    assert one.points == many.points > 0
    assert one.dead == many.dead and "not valid JSON" in one.dead[0]
    assert h1.counts["batches"] == 3 and h2.counts["batches"] > 3  # a call per run and take
    assert len(h1.ck.unacked) == len(msgs) == len(h2.ck.unacked)  # all acked, refusal too


def test_a_message_is_acked_only_once_its_partition_is_done_up_to_it():
    """Runs are processed out of offset order, and Faust's commit does not always stop at
    a gap before the acked offsets: an ack never gets ahead of its partition."""
    from telltale.streams.checkpoint import Checkpointer

    def msg(run, offset):
        ev = {"step": offset + 1, "ts": 1.7e9 + offset, "metrics": {"loss": 1.0}}
        return _event(encode_batch(run, [ev]), partition=0, offset=offset, key=run.encode())

    async def go():
        ck = Checkpointer({}, None, None)
        h = BatchHandler(Config(), RunProcessor(Config()), ck, _Outputs(), {})
        a0, b1, a2 = msg("a", 0), msg("b", 1), msg("a", 2)
        for m in (a0, b1, a2):
            h.add(m)
        await h._step()  # admits all three, processes run a (offsets 0 and 2)
        first = [e.message.offset for e in ck.unacked]
        await h._step()  # run b
        return first, [e.message.offset for e in ck.unacked]

    first, then = asyncio.run(go())
    assert first == [0] and then == [0, 1, 2]


def test_messages_a_restored_state_holds_are_skipped():
    msgs = _messages(runs=2, steps=200, per=20)

    async def go():
        from telltale.streams.checkpoint import Checkpointer

        ck = Checkpointer({}, None, None)
        outputs = _Outputs()
        h = BatchHandler(Config(), RunProcessor(Config()), ck, outputs, {})
        for m in msgs:
            h.add(m)
        await h.process_all()
        first = len(outputs.alerts), outputs.points
        for m in msgs:  # the same messages again (a replay after a crash)
            h.add(m)
        await h.process_all()
        return first, (len(outputs.alerts), outputs.points), h.counts["skipped"]

    first, again, skipped = asyncio.run(go())
    assert first == again and skipped == len(msgs)


def test_the_status_counts_garbage_collections_and_their_pauses():
    import gc

    from telltale.streams.status import GcPauses

    pauses = GcPauses()
    try:
        before = pauses.doc()["collections"][2]
        gc.collect(2)
        doc = pauses.doc()
        assert doc["collections"][2] == before + 1
        assert doc["pause_s"][2] >= doc["pause_max_s"][2] > 0.0
    finally:
        pauses.close()
    gc.collect(2)
    assert pauses.doc()["collections"][2] == before + 1  # closed: no longer counting
