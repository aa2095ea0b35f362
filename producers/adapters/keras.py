"""A Keras 3 callback: batch logs as ``train`` events, ``val_*`` epoch logs as ``eval``."""

from __future__ import annotations

import keras

from telltale.producers.adapters import current_monitor, split_metrics


class TelltaleCallback(keras.callbacks.Callback):
    """``model.fit(..., callbacks=[TelltaleCallback(mon)])``; logs every ``every`` batches."""

    def __init__(self, monitor=None, every: int = 1):
        super().__init__()
        self.monitor, self.every = current_monitor(monitor), max(1, every)
        self.global_step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        if self.global_step % self.every == 0:
            train, _ = split_metrics(logs)
            if train:
                self.monitor.log(train, step=self.global_step)

    def on_epoch_end(self, epoch, logs=None):
        _, ev = split_metrics(logs)
        if ev:
            self.monitor.log(ev, step=self.global_step, kind="eval")

    def on_train_end(self, logs=None):
        self.monitor.flush(timeout=5.0)
