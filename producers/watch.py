"""PyTorch model internals, sampled every N training steps so the cost stays bounded.

A training step is one forward call of the watched model in training mode with grad
enabled. On a sampled step ``s`` the hooks record, per layer (a module's dotted name):
activation mean / std / fraction of zeros (forward hooks on leaf modules), attention
entropy (``nn.MultiheadAttention``, also inside Transformer layers), gradient norm (when
each parameter's gradient is accumulated, i.e. before clipping) and a copy of the weights.
At the next step's forward the optimizer has updated them, so the update ratio
‖Δw‖/‖w‖ and the weight norm are computed then, and everything is logged (kind ``train``)
at step ``s`` of the monitor. Between sampled steps one cheap forward pre-hook runs.
``torch`` is imported only when :func:`watch` is called.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("telltale")


def _first_tensor(out, torch):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class Watch:
    """The hooks on one model; :meth:`remove` takes them off."""

    def __init__(self, model, monitor, every: int = 50, activations: bool = True,
                 gradients: bool = True, updates: bool = True, attention: bool = True,
                 max_layers: int = 64):
        import torch

        if every < 1:
            raise ValueError("every must be a positive number of steps")
        self.torch, self.model, self.monitor, self.every = torch, model, monitor, every
        self.activations, self.gradients = activations, gradients
        self.updates, self.attention = updates, attention
        self.calls = 0
        self._sampling = False
        self._pending: dict | None = None  # stats of a sampled step, waiting for the update
        self._handles: list = []  # temporary hooks of a sampled step
        # parameters by owning layer, in model order (at most max_layers layers reported)
        self.layers: list[tuple[str, list]] = []
        for name, mod in model.named_modules():
            params = [p for p in mod.parameters(recurse=False) if p.requires_grad]
            if params and len(self.layers) < max_layers:
                self.layers.append((name or "model", params))
        skip = (torch.nn.modules.dropout._DropoutNd, torch.nn.Identity)
        self.leaves = [(n or "model", m) for n, m in model.named_modules()
                       if not any(True for _ in m.children()) and not isinstance(m, skip)]
        self.leaves = self.leaves[:max_layers]
        self.attn = [(n or "model", m) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.MultiheadAttention)]
        self._root = model.register_forward_pre_hook(self._on_forward)
        monitor._extras.append(self)

    # -- per step -----------------------------------------------------------------

    def _on_forward(self, module, args):
        torch = self.torch
        if not module.training or not torch.is_grad_enabled():
            return None
        if self._sampling:  # the sampled step's forward is over: its backward/step followed
            self._finish_sample()
        self.calls += 1
        if self.calls % self.every == 0:
            self._start_sample()
        return None

    def _start_sample(self) -> None:
        torch = self.torch
        self._sampling = True
        self._pending = {"act": {}, "grad": {}, "attn": {}}
        if self.activations:
            for name, mod in self.leaves:
                self._handles.append(mod.register_forward_hook(self._act_hook(name)))
        if self.attention:
            for name, mod in self.attn:
                self._handles.append(mod.register_forward_pre_hook(
                    _need_weights, with_kwargs=True))
                self._handles.append(mod.register_forward_hook(self._attn_hook(name)))
        if self.gradients and hasattr(torch.Tensor, "register_post_accumulate_grad_hook"):
            for name, params in self.layers:
                for p in params:
                    self._handles.append(p.register_post_accumulate_grad_hook(
                        self._grad_hook(name)))
        if self.updates:
            with torch.no_grad():
                self._pending["before"] = [[p.detach().clone() for p in params]
                                           for _, params in self.layers]

    def _act_hook(self, name):
        def hook(module, args, out):
            t = _first_tensor(out, self.torch)
            if (t is None or not self.torch.is_grad_enabled() or not t.is_floating_point()
                    or t.numel() < 2):
                return
            torch = self.torch
            with torch.no_grad():
                t = t.detach()  # sum and norm: far cheaper than std_mean on CPU
                self._pending["act"][name] = (t.sum(), torch.linalg.vector_norm(t),
                                              torch.count_nonzero(t), t.numel())
        return hook

    def _attn_hook(self, name):
        def hook(module, args, out):
            if not isinstance(out, tuple) or len(out) < 2 or out[1] is None:
                return
            with self.torch.no_grad():
                w = out[1].detach().float().clamp_min(1e-12)
                self._pending["attn"][name] = -(w * w.log()).sum(-1).mean()
        return hook

    def _grad_hook(self, name):
        def hook(p):
            if p.grad is not None:
                self._pending["grad"].setdefault(name, []).append(
                    self.torch.linalg.vector_norm(p.grad.detach()))
        return hook

    def _finish_sample(self) -> None:
        torch = self.torch
        self._sampling = False
        for h in self._handles:
            h.remove()
        self._handles.clear()
        pend, self._pending = self._pending, None
        if pend is None:
            return
        # every statistic is a 0-d tensor; one stack + tolist() brings them all over
        tensors: list = []
        with torch.no_grad():
            acts = list(pend["act"].items())
            for _, (total, norm, nonzero, _n) in acts:
                tensors += [total, norm, nonzero]
            attn = list(pend["attn"].items())
            tensors += [ent for _, ent in attn]
            grads = list(pend["grad"].items())
            tensors += [n for _, norms in grads for n in norms]
            if "before" in pend:
                params = [p.detach() for _, ps in self.layers for p in ps]
                before = [b for bs in pend["before"] for b in bs]
                tensors += _norms(torch, params)
                tensors += _norms(torch, _sub(torch, params, before))
            if not tensors:
                return
            flat = iter(torch.stack([t.reshape(()).float().cpu() for t in tensors]).tolist())
        out: dict[str, float] = {}
        for layer, (_s, _q, _nz, n) in acts:
            mean, rms = next(flat) / n, next(flat) / math.sqrt(n)
            out[f"act_mean/{layer}"] = mean
            out[f"act_std/{layer}"] = math.sqrt(max(rms * rms - mean * mean, 0.0))
            out[f"act_zero_frac/{layer}"] = 1.0 - next(flat) / n
        for layer, _ in attn:
            out[f"attn_entropy/{layer}"] = next(flat)
        total = 0.0
        for layer, norms in grads:
            sq = sum(next(flat) ** 2 for _ in norms)
            out[f"grad_norm/{layer}"] = math.sqrt(sq)
            total += sq
        if grads:
            out["grad_norm"] = math.sqrt(total)
        if "before" in pend:
            w_sq = [[next(flat) ** 2 for _ in ps] for _, ps in self.layers]
            d_sq = [[next(flat) ** 2 for _ in ps] for _, ps in self.layers]
            for (layer, _), w, d in zip(self.layers, w_sq, d_sq, strict=True):
                out[f"param_norm/{layer}"] = math.sqrt(sum(w))
                out[f"update_ratio/{layer}"] = math.sqrt(sum(d)) / max(math.sqrt(sum(w)), 1e-12)
            w_all = math.sqrt(sum(map(sum, w_sq)))
            out["param_norm"] = w_all
            out["update_ratio"] = math.sqrt(sum(map(sum, d_sq))) / max(w_all, 1e-12)
        self.monitor.log(out, step=self.monitor.step, kind="train")

    def flush(self) -> None:
        """Log a sampled step now (e.g. at the end of training), if one is pending."""
        if self._sampling:
            self._finish_sample()

    def stop(self) -> None:
        self.flush()
        self.remove()

    def remove(self) -> None:
        """Take every hook off the model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._root.remove()
        self._sampling, self._pending = False, None


def _norms(torch, tensors: list) -> list:
    """L2 norms of many tensors (one fused call where PyTorch has it)."""
    if hasattr(torch, "_foreach_norm"):
        return list(torch._foreach_norm(tensors))
    return [torch.linalg.vector_norm(t) for t in tensors]


def _sub(torch, a: list, b: list) -> list:
    if hasattr(torch, "_foreach_sub"):
        return list(torch._foreach_sub(a, b))
    return [x - y for x, y in zip(a, b, strict=True)]


def _need_weights(module, args, kwargs):
    """Ask MultiheadAttention for per-head weights on a sampled step."""
    if len(args) < 5:  # need_weights is the 5th parameter
        kwargs["need_weights"] = True
    if len(args) < 7:
        kwargs["average_attn_weights"] = False
    return args, kwargs


def watch(model, monitor, every: int = 50, **options) -> Watch:
    """Hook ``model`` (a ``torch.nn.Module``) so that every ``every`` training steps its
    internals are logged on ``monitor``; returns the :class:`Watch` (``.remove()``)."""
    try:
        import torch
    except ImportError:
        raise ImportError("telltale.watch needs PyTorch: pip install 'telltale[torch]'") \
            from None
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch() needs a torch.nn.Module, got {type(model).__name__}")
    return Watch(model, monitor, every=every, **options)
