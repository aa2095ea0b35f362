"""A PyTorch Lightning logger: ``Trainer(logger=TelltaleLogger(mon))``."""

from __future__ import annotations

try:
    from lightning.pytorch.loggers.logger import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # the older package name
    from pytorch_lightning.loggers.logger import Logger
    from pytorch_lightning.utilities import rank_zero_only

from telltale.producers.adapters import current_monitor, split_metrics


class TelltaleLogger(Logger):
    """Metrics from ``self.log(...)`` as events: names starting with ``val_``/``eval_`` as
    ``eval``, the rest as ``train`` (``learning_rate`` -> ``lr``). Hyper-parameters are not
    shipped."""

    def __init__(self, monitor=None):
        super().__init__()
        self.monitor = current_monitor(monitor)

    @property
    def name(self) -> str:
        return "telltale"

    @property
    def version(self) -> str:
        return self.monitor.run

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        train, ev = split_metrics(metrics)
        if train:
            self.monitor.log(train, step=step)
        if ev:
            self.monitor.log(ev, step=step if step is not None else self.monitor.step,
                             kind="eval")

    def finalize(self, status: str) -> None:
        self.monitor.flush(timeout=5.0)
