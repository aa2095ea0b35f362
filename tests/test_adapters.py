"""Framework adapters, each in a real (tiny) training run: Keras 3 (torch backend),
Hugging Face Trainer, PyTorch Lightning."""

import numpy as np
import torch
from torch import nn

from telltale.producers import Monitor
from tests.support.transports import SwitchableTransport


def monitor():
    t = SwitchableTransport()
    return t, Monitor("adapter", t, linger=0.001)


def test_keras_callback_logs_batches_and_validation(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    import keras

    from telltale.producers.adapters.keras import TelltaleCallback

    assert keras.backend.backend() == "torch"
    t, mon = monitor()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.random.rand(64, 4).astype("float32"), np.random.rand(64, 1).astype("float32")
    model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
              callbacks=[TelltaleCallback(mon)])
    mon.close()
    train = [e for e in t.delivered if e.kind == "train"]
    evals = [e for e in t.delivered if e.kind == "eval"]
    assert [e.step for e in train] == list(range(1, 7))  # 48 samples / 16 per batch × 2 epochs
    assert all(np.isfinite(e.metrics["loss"]) for e in train)
    assert [(e.step, sorted(e.metrics)) for e in evals] == [(3, ["val_loss"]), (6, ["val_loss"])]


class RegressionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.lin(x)
        loss = nn.functional.mse_loss(out, labels) if labels is not None else None
        return {"loss": loss, "logits": out}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def test_hugging_face_trainer_callback(tmp_path):
    from transformers import Trainer, TrainingArguments

    from telltale.producers.adapters.hf import TelltaleTrainerCallback

    t, mon = monitor()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, logging_steps=2,
                             eval_strategy="steps", eval_steps=5, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=Rows(64),
                      eval_dataset=Rows(16), callbacks=[TelltaleTrainerCallback(mon)])
    trainer.train()
    mon.close()
    train = [e for e in t.delivered if e.kind == "train"]
    evals = [e for e in t.delivered if e.kind == "eval"]
    assert [e.step for e in train] == [2, 4, 6, 8, 10]
    assert {"loss", "lr", "grad_norm"} <= set(train[0].metrics)
    assert [e.step for e in evals] == [5, 10] and "val_loss" in evals[0].metrics


def test_lightning_logger(tmp_path):
    import lightning.pytorch as pl

    from telltale.producers.adapters.lightning import TelltaleLogger

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def training_step(self, batch, i):
            loss = nn.functional.mse_loss(self.lin(batch["x"]), batch["labels"])
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, i):
            self.log("val_loss", nn.functional.mse_loss(self.lin(batch["x"]), batch["labels"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    t, mon = monitor()
    loader = torch.utils.data.DataLoader(Rows(64), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, logger=TelltaleLogger(mon), log_every_n_steps=2,
                         accelerator="cpu", enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), num_sanity_val_steps=0)
    trainer.fit(Module(), loader, torch.utils.data.DataLoader(Rows(16), batch_size=8))
    mon.close()
    train = [e for e in t.delivered if e.kind == "train" and "loss" in e.metrics]
    evals = [e for e in t.delivered if e.kind == "eval"]
    assert len(train) == 8 and [e.step for e in train] == sorted(e.step for e in train)
    assert len(evals) == 2 and all("val_loss" in e.metrics for e in evals)
