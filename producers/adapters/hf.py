"""A Hugging Face ``TrainerCallback``: ``Trainer`` logs as Telltale events."""

from __future__ import annotations

from transformers import TrainerCallback

from telltale.producers.adapters import current_monitor, split_metrics


class TelltaleTrainerCallback(TrainerCallback):
    """``Trainer(..., callbacks=[TelltaleTrainerCallback(mon)])``: ``loss``, ``grad_norm``,
    ``learning_rate`` (as ``lr``) at ``state.global_step``; ``eval_*`` as ``val_*``."""

    def __init__(self, monitor=None):
        self.monitor = current_monitor(monitor)

    def on_log(self, args, state, control, logs=None, **kwargs):
        train, ev = split_metrics(logs, skip=("epoch", "step", "total_flos"))
        for k in [k for k in train if k.startswith("train_")]:  # end-of-training summary
            train.pop(k)
        step = int(state.global_step)
        if train:
            self.monitor.log(train, step=step)
        if ev:
            self.monitor.log(ev, step=step, kind="eval")

    def on_train_end(self, args, state, control, **kwargs):
        self.monitor.flush(timeout=5.0)
