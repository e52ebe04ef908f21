"""The optimizer of a training run: AdamW alone, or Muon for the blocks' matrices and AdamW for the rest.

AdamW scales each weight's step by its own gradient history. Muon (Keller Jordan, 2024;
`torch.optim.Muon`) treats a weight matrix as a whole: it replaces the matrix's momentum by
the nearest orthogonal matrix (five Newton-Schulz iterations), so every direction of the
update gets the same size and rarely used directions learn as fast as common ones. It is made
for the 2-D weights inside the Transformer blocks (attention's QKV and output, the MLP's up and
down); embeddings, the LM head, biases and LayerNorm gains stay with AdamW, as in
modded-nanogpt's records.

Every parameter group keeps its own peak learning rate as `peak_lr`; the schedule scales all of
them by the same factor each step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scratchgpt.params import TrainParams


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices inside the Transformer blocks: the tensors Muon updates."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.dim() == 2 and name.startswith("blocks.")]


def make_optimizer(model: nn.Module, settings: TrainParams) -> torch.optim.Optimizer | MuonWithAdamW:
    """The optimizer `settings.optimizer` names; AdamW decays matrices and embeddings, never
    biases or LayerNorm gains. On a GPU, AdamW's fused kernel updates its tensors in one launch."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for_muon = muon_parameters(model) if settings.optimizer == "muon" else []
    muon_ids = {id(p) for p in for_muon}
    rest = [p for p in parameters if id(p) not in muon_ids]
    on_gpu = parameters[0].is_cuda
    adamw = torch.optim.AdamW(
        [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=settings.peak_lr, betas=(settings.beta1, settings.beta2), foreach=not on_gpu, fused=on_gpu,
    )
    for group in adamw.param_groups:
        group["peak_lr"] = settings.peak_lr
    if not for_muon:
        return adamw
    muon = torch.optim.Muon(for_muon, lr=settings.muon_lr, weight_decay=settings.muon_weight_decay)
    muon.param_groups[0]["peak_lr"] = settings.muon_lr
    return MuonWithAdamW(muon, adamw)


class MuonWithAdamW:
    """Two optimizers stepped as one, with one state dict in torch's own layout (so the saved
    training state and its checks work for both): Muon's tensors first, then AdamW's."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.optimizers = (muon, adamw)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def _sizes(self) -> list[int]:
        return [sum(len(group["params"]) for group in optimizer.param_groups) for optimizer in self.optimizers]

    def state_dict(self) -> dict[str, Any]:
        """Each optimizer's state dict, its tensor indices shifted past the optimizers before it."""
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for optimizer, size in zip(self.optimizers, self._sizes()):
            own = optimizer.state_dict()
            state |= {index + offset: value for index, value in own["state"].items()}
            groups += [group | {"params": [i + offset for i in group["params"]]} for group in own["param_groups"]]
            offset += size
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = iter(state_dict["param_groups"])
        offset = 0
        for optimizer, size in zip(self.optimizers, self._sizes()):
            own_groups = [next(groups) for _ in optimizer.param_groups]
            optimizer.load_state_dict({
                "state": {i - offset: v for i, v in state_dict["state"].items() if offset <= i < offset + size},
                "param_groups": [group | {"params": [i - offset for i in group["params"]]} for group in own_groups],
            })
            offset += size
