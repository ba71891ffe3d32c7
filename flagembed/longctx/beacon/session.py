"""One sequence through the beacon runtime: token buffer, planner, memory, loss over raw tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flagembed.longctx.beacon.memory import BeaconMemory
from flagembed.longctx.beacon.params import decoder
from flagembed.longctx.beacon.planner import BeaconSettings, Planner
from flagembed.longctx.beacon.runner import run_step
from flagembed.longctx.loss import chunked_causal_lm_loss


def _sum_loss(hidden: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token CE of rows ``hidden`` [N, H] against their own (pre-shifted) ``labels`` [N], chunked
    over the vocabulary by ``chunked_causal_lm_loss`` (HF convention: a leading -100 and a trailing dummy row
    pair row i with label i)."""
    pad_h = torch.cat([hidden, hidden[-1:]], dim=0)[None]
    pad_l = torch.cat([labels.new_full((1,), -100), labels])[None]
    return chunked_causal_lm_loss(pad_h, lm_head, pad_l, reduction="sum")


@dataclass
class StepOutput:
    loss_sum: torch.Tensor | None
    count: int
    logits: torch.Tensor | None  # last step's raw tokens (or the last one), beacons removed


class BeaconSession:
    """The state of one sequence; ``feed`` appends tokens and runs every step they complete or start."""

    def __init__(self, model: nn.Module, settings: BeaconSettings, training: bool = False) -> None:
        self.model = model
        self.settings = settings
        self.training = training
        self.memory = BeaconMemory(len(decoder(model).layers))
        self.planner = Planner(settings, training=training)
        self.gradient_checkpointing = False
        self.memory.on_reset = self._forget  # model.memory.reset() (what harnesses call) resets the whole sequence
        self.reset()

    def reset(self) -> None:
        """Forget the sequence: memory, planner (ratio RNG reseeded) and token buffer."""
        self.memory.reset()

    def _forget(self) -> None:
        self.planner.reset()
        self.ids: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.ids is None else self.ids.shape[1]

    def feed(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, logits: str = "step") -> StepOutput:
        """Append ``input_ids`` [B, n] (labels unshifted, HF convention) and run the steps; ``logits`` is
        "step" (the last step's raw tokens), "last" (its last token) or "none"."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids of shape {tuple(input_ids.shape)}: need [batch, n >= 1]")
        if self.training and self.length == 0 and input_ids.shape[1] <= self.settings.window:
            raise ValueError(
                f"training sequence of {input_ids.shape[1]} tokens fits one window ({self.settings.window}): "
                "it has no beacons, so beacon parameters get no gradient; use sequences longer than the window"
            )
        shifted = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels of shape {tuple(labels.shape)} != input_ids {tuple(input_ids.shape)}")
            shifted = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
        else:
            shifted = input_ids.new_full(input_ids.shape, -100)
        self.ids = input_ids if self.ids is None else torch.cat([self.ids, input_ids], dim=1)
        self.labels = shifted if self.labels is None else torch.cat([self.labels, shifted], dim=1)
        self.planner.extend(input_ids.shape[1])
        lm_head = self.model.lm_head
        loss_sum, count, out_logits = None, 0, None
        while not self.planner.done:
            plan = self.planner.next_step()
            hidden = run_step(self.model, plan, self.ids, self.memory, self.gradient_checkpointing)
            raw_rows = torch.tensor(plan.raw_rows, device=hidden.device)
            if labels is not None and plan.loss:
                src = torch.tensor([plan.src[i] for i in plan.raw_rows], device=hidden.device)
                lab = self.labels.index_select(1, src)
                keep = lab != -100
                if keep.any():
                    rows_h = hidden.index_select(1, raw_rows)[keep]
                    part = _sum_loss(rows_h, lm_head, lab[keep])
                    loss_sum = part if loss_sum is None else loss_sum + part
                    count += int(keep.sum())
            if self.planner.done and logits != "none":
                last = hidden.index_select(1, raw_rows)
                out_logits = lm_head(last[:, -1:] if logits == "last" else last).float()
        return StepOutput(loss_sum, count, out_logits)
