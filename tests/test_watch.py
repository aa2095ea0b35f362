"""watch(): per-layer statistics of a real PyTorch training loop, sampled every N steps."""

import math

import pytest
import torch
from torch import nn

from telltale.producers import Monitor
from telltale.producers.watch import watch
from tests.support.transports import SwitchableTransport


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x):
        return self.head(self.encoder(self.embed(x))).mean(1)


def train(model, mon, steps, lr=0.05, check=None):
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        x, y = torch.randn(4, 6, 8), torch.randn(4, 1)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if check is not None:
            check(step, model)
        opt.step()
        mon.log({"loss": loss.item()}, step=step)


def test_watch_publishes_every_metric_family_at_sampled_steps_only():
    torch.manual_seed(0)
    model, t = TinyTransformer(), SwitchableTransport()
    mon = Monitor("w", t, linger=0.001)
    expected = {}

    def check(step, m):  # what the sampled steps must report, computed independently
        if step % 5 == 0:
            grads = [p.grad for p in m.parameters()]
            expected[step] = {
                "grad_norm": torch.sqrt(sum(g.pow(2).sum() for g in grads)).item(),
                "grad_norm/head.1": m.head[1].weight.grad.norm().pow(2).add(
                    m.head[1].bias.grad.norm().pow(2)).sqrt().item(),
                "update_ratio/head.1": (0.05 * torch.cat([m.head[1].weight.grad.flatten(),
                                                          m.head[1].bias.grad]).norm()
                                        / torch.cat([m.head[1].weight.flatten(),
                                                     m.head[1].bias]).sub(
                    0.05 * torch.cat([m.head[1].weight.grad.flatten(),
                                      m.head[1].bias.grad])).norm()).item(),
            }

    w = watch(model, mon, every=5)
    train(model, mon, 20, check=check)
    mon.close()  # flushes the last sampled step
    internals = [e for e in t.delivered if len(e.metrics) > 1]
    assert [e.step for e in internals] == [5, 10, 15, 20]
    for e in internals:
        m = e.metrics
        for name, value in expected[e.step].items():
            assert m[name] == pytest.approx(value, rel=1e-4), name
        layers = {"embed", "encoder.linear1", "encoder.linear2", "encoder.norm1", "head.1",
                  "encoder.self_attn", "encoder.self_attn.out_proj"}
        for layer in layers:
            assert m[f"grad_norm/{layer}"] > 0 and m[f"param_norm/{layer}"] > 0
            assert 0 < m[f"update_ratio/{layer}"] < 1
        assert 0 <= m["act_zero_frac/head.0"] <= 1 and m["act_zero_frac/head.0"] > 0.1  # ReLU
        assert m["act_std/encoder.norm2"] == pytest.approx(1.0, abs=0.1)  # LayerNorm output
        assert 0 < m["attn_entropy/encoder.self_attn"] <= math.log(6) + 1e-6
        assert not any(k.startswith("act_mean/encoder.dropout") for k in m)
        assert {"param_norm", "update_ratio", "grad_norm"} <= set(m)
    w.remove()
    assert not model._forward_pre_hooks and not model.head[1]._forward_hooks


def test_eval_and_no_grad_forwards_are_not_training_steps():
    model, t = TinyTransformer(), SwitchableTransport()
    mon = Monitor("w", t, linger=0.001)
    w = watch(model, mon, every=2)
    model.eval()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(2, 3, 8))
    model.train()
    assert w.calls == 0
    train(model, mon, 3)
    assert w.calls == 3
    mon.close()
    assert [e.step for e in t.delivered if len(e.metrics) > 1] == [2]


def test_watch_rejects_what_is_not_a_module():
    mon = Monitor("w", SwitchableTransport())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        watch(object(), mon)
    with pytest.raises(ValueError, match="positive"):
        watch(nn.Linear(2, 2), mon, every=0)
    mon.close()
