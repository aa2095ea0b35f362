"""The embedded pipeline survives what goes wrong inside it."""

from __future__ import annotations

import threading

from telltale.config import Config
from telltale.schema import encode_batch
from telltale.streams.embedded import EmbeddedPipeline


def test_a_processor_exception_dead_letters_that_batch_and_the_pipeline_goes_on():
    """Before: the consumer thread ended on the exception; later messages waited forever."""
    rejected, alerts = [], []
    pipe = EmbeddedPipeline(Config(), on_reject=rejected.append, on_alert=alerts.append)
    real = pipe.processor.process

    def process(state, events):  # a processor fault on one run's batch
        if state["run"] == "poison":
            raise ZeroDivisionError("float division by zero")
        return real(state, events)
    pipe.processor.process = process
    pipe.submit(b"p", encode_batch("poison", [{"step": 1, "ts": 1.0, "metrics": {"loss": 1.0}}]))
    good = [{"step": s, "ts": float(s), "metrics": {"loss": 1.0 + 0.01 * (s % 5)}}
            for s in range(1, 301)]
    good[250]["metrics"]["loss"] = float("nan")  # one alert, so processing is seen
    for i in range(0, 300, 50):
        pipe.submit(b"g", encode_batch("good", good[i:i + 50]))
    done = threading.Thread(target=pipe.drain, daemon=True)
    done.start()
    done.join(20)
    assert not done.is_alive(), "the pipeline stopped processing"
    assert pipe.counts["events"] == 301 and pipe.counts["errors"] == 1
    assert len(rejected) == 1 and "processing error: ZeroDivisionError" in rejected[0]["reason"]
    assert '"poison"' in rejected[0]["raw"]
    assert any(a["run"] == "good" and a["detector"] == "nonfinite" for a in alerts)
    pipe.close()
