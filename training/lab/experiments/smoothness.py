"""Santurkar et al. (2018) measurements at one point of training, on one mini-batch.

- `landscape`: move the weights along the gradient by several step sizes and record how much the
  loss varies (its range), how much the gradient changes (gradient predictiveness) and the
  largest gradient change per unit of distance moved (the "effective β-smoothness").
- `coupling`: their definition of internal covariate shift (ICS): how much one layer's gradient
  changes when only the layers before it take their gradient step — the lecture's "coupling
  between layers", measured rather than pictured.

Both run BN in training mode (batch statistics, as during training) and leave the model as found.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from foldserve.training.lab.experiments.common import modules_of, preserved

# Step sizes along the (raw) gradient direction, the same for every network.
STEP_SIZES = (0.05, 0.1, 0.2, 0.4)


def _loss_and_grads(
    model: nn.Module, params: Sequence[nn.Parameter], x: torch.Tensor, y: torch.Tensor
) -> tuple[float, list[torch.Tensor]]:
    loss = nn.functional.cross_entropy(model(x), y)
    # autograd.grad leaves .grad alone: the optimizer's state is none of this probe's business.
    return float(loss.detach()), list(torch.autograd.grad(loss, params))


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


def _move(params: Sequence[nn.Parameter], origin, direction, step: float) -> None:
    with torch.no_grad():
        for param, start, grad in zip(params, origin, direction, strict=True):
            param.copy_(start - step * grad)


def landscape(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: Sequence[float] = STEP_SIZES
) -> dict[str, float]:
    """Loss range, gradient change and β-smoothness along the gradient from the current weights.

    Returns:
        `loss_range`: max − min of the loss over the origin and each step; `grad_change`: the
        largest ‖∇L(w) − ∇L(w − η∇L(w))‖; `beta`: the largest such change divided by the distance
        moved, η‖∇L(w)‖; `grad_norm`: ‖∇L(w)‖.
    """
    with preserved(model):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        origin = [p.detach().clone() for p in params]
        loss0, grads0 = _loss_and_grads(model, params, x, y)
        grad_norm = _norm(grads0)
        losses, changes, betas = [loss0], [], []
        for step in steps:
            _move(params, origin, grads0, step)
            loss, grads = _loss_and_grads(model, params, x, y)
            change = _norm([g - g0 for g, g0 in zip(grads, grads0, strict=True)])
            losses.append(loss)
            changes.append(change)
            betas.append(change / max(step * grad_norm, 1e-12))
    return {
        "loss_range": max(losses) - min(losses),
        "grad_change": max(changes),
        "beta": max(betas),
        "grad_norm": grad_norm,
    }


def coupling(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: float
) -> list[dict[str, float]]:
    """Santurkar's ICS of every Linear layer after the first, at step size `step`.

    For layer i: G = ∇_{W_i} L(w); G' = the same gradient after every parameter *before* layer i
    took its gradient step (layer i and later unchanged).

    Returns:
        One record per layer: `relative` ‖G − G'‖ / ‖G‖ and `cosine` between G and G'.
    """
    linears = modules_of(model, nn.Linear)
    order = list(model.modules())
    records = []
    with preserved(model):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        origin = [p.detach().clone() for p in params]
        _, grads = _loss_and_grads(model, params, x, y)
        for layer in linears[1:]:
            earlier = {id(p) for m in order[: order.index(layer)] for p in m.parameters(False)}
            moved = [
                g if id(p) in earlier else torch.zeros_like(g)
                for p, g in zip(params, grads, strict=True)
            ]
            _move(params, origin, moved, step)
            weight = next(i for i, p in enumerate(params) if p is layer.weight)
            _, after = _loss_and_grads(model, params, x, y)
            before_w, after_w = grads[weight].flatten(), after[weight].flatten()
            records.append(
                {
                    "relative": float(
                        (before_w - after_w).norm() / before_w.norm().clamp_min(1e-12)
                    ),
                    "cosine": float(nn.functional.cosine_similarity(before_w, after_w, dim=0)),
                }
            )
            _move(params, origin, grads, 0.0)
    return records
