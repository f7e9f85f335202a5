"""The one training loop: token rows as their own parameter, frozen backbone, method-selected losses.

Only `TokenTrainer.param` (num_vectors x width) is optimised. The rows reach the text tower
through `TextEncoder.encode(tokens={placeholder: rows})`, so the embedding table and every other
backbone weight stay untouched (they have requires_grad False and are never written). Every
random draw comes from one CPU generator whose state is checkpointed with the optimiser, so a
resumed run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import TrainConfig, TrainingError
from .data import LatentBank
from .subspace import Subspace, anchor_loss


@dataclass
class LossInputs:
    """What the losses need, computed once before the loop (all frozen)."""

    latents: LatentBank | None  # diffusion loss: posteriors of the concept images
    ce_features: torch.Tensor | None  # classification: CLIP features of [positives, negatives] (N, D)
    ce_labels: torch.Tensor | None  # (N,) 1 for positives, 0 for negatives
    parent_text: torch.Tensor | None  # tau_parent = g_pool(ce_prompt with the parent only), (D,)
    logit_scale: float = 100.0  # CLIP's logit scale
    anchors: torch.Tensor | None = None  # anchor-loss word embeddings (m, width)
    anchor_active: torch.Tensor | None = None  # (num_vectors, top) indices into anchors


def balanced_bce(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of p = sigmoid(scores) with positives and negatives weighted equally."""
    pos, neg = labels > 0.5, labels <= 0.5
    if not bool(pos.any()) or not bool(neg.any()):
        raise TrainingError("the classification loss needs both positive and negative images")
    return -(F.logsigmoid(scores[pos]).mean() + F.logsigmoid(-scores[neg]).mean()) / 2


def best_intercept(scores: torch.Tensor, labels: torch.Tensor, iterations: int = 12) -> torch.Tensor:
    """The intercept b minimising balanced_bce(scores + b) (Newton's method on a convex 1-D problem).

    Profiling the intercept out makes the classification loss depend on how the scores rank and
    separate the images, not on where the parent prompt happens to put the threshold.
    """
    pos, neg = labels > 0.5, labels <= 0.5
    b = torch.zeros((), dtype=scores.dtype, device=scores.device)
    for _ in range(iterations):
        p_pos, p_neg = torch.sigmoid(scores[pos] + b), torch.sigmoid(scores[neg] + b)
        grad = (-(1 - p_pos).mean() + p_neg.mean()) / 2
        hess = ((p_pos * (1 - p_pos)).mean() + (p_neg * (1 - p_neg)).mean()) / 2
        b = b - grad / hess.clamp(min=1e-6)
    return b


def classification_scores(features: torch.Tensor, token_text: torch.Tensor, parent_text: torch.Tensor,
                          logit_scale: float) -> torch.Tensor:
    """log p(* | x) - log p(c | x) of the two-way softmax over {f.tau_*, f.tau_c} times the logit scale
    (with ce_bias the trainer adds the best intercept, see best_intercept)."""
    return logit_scale * (features @ token_text - features @ parent_text)


class TokenTrainer:
    """One token's parameter, optimiser and generator; `step()` is one optimiser step."""

    def __init__(self, backbone, encoder, placeholder: str, parent: str, config: TrainConfig,
                 inputs: LossInputs, init: torch.Tensor, subspace: Subspace | None):
        from diffusers import DDPMScheduler

        spec = config.spec
        if spec.projection and subspace is None:
            raise TrainingError(f"method {config.method} needs an attribute subspace")
        if spec.diffusion and (inputs.latents is None or not backbone.has_diffusion):
            raise TrainingError(f"method {config.method} needs a backbone with a diffusion model")
        if spec.classification and inputs.ce_features is None:
            raise TrainingError(f"method {config.method} needs positive and negative image features")
        self.backbone, self.encoder = backbone, encoder
        self.placeholder, self.parent, self.config = placeholder, parent, config
        self.inputs, self.subspace = inputs, subspace if spec.projection else None
        self.param = torch.nn.Parameter(init.detach().clone().float().to(backbone.device))
        self.optimizer = torch.optim.AdamW([self.param], lr=config.lr, weight_decay=config.weight_decay)
        self.generator = torch.Generator("cpu").manual_seed(config.seed)
        self.noise_scheduler = DDPMScheduler.from_config(backbone.scheduler.config) if spec.diffusion else None
        self.step_count = 0
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- forward

    def vectors(self) -> torch.Tensor:
        """The rows the text tower sees: projected for ti+ce+proj, raw otherwise (keeps the graph)."""
        return self.subspace.project(self.param) if self.subspace is not None else self.param

    def micro_batch(self) -> dict[str, torch.Tensor]:
        """Loss terms of one micro-batch; keys present exactly for the method's terms, plus 'loss'."""
        cfg, spec, gen = self.config, self.config.spec, self.generator
        phrase = f"{self.placeholder} {self.parent}"
        prompts: list[str] = []
        if spec.diffusion:
            picks = torch.randint(len(cfg.templates), (cfg.batch_size,), generator=gen)
            prompts = [cfg.templates[int(i)].format(phrase) for i in picks]
        if spec.classification:
            prompts.append(cfg.ce_prompt.format(phrase))
        vectors = self.vectors()
        text = self.encoder.encode(prompts, {self.placeholder: vectors})
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.param.device)
        if spec.diffusion:
            terms["sd"] = self._diffusion_loss(text.seq[:cfg.batch_size])
            total = total + cfg.lambda_sd * terms["sd"]
        if spec.classification:
            i = self.inputs
            scores = classification_scores(i.ce_features.to(text.pooled), text.pooled[-1].float(),
                                           i.parent_text.to(text.pooled), i.logit_scale)
            labels = i.ce_labels.to(scores)
            if cfg.ce_bias:
                scores = scores + best_intercept(scores.detach(), labels)
            terms["ce"] = balanced_bce(scores, labels)
            total = total + cfg.lambda_ce * terms["ce"]
        if cfg.anchor_weight > 0:
            terms["anchor"] = anchor_loss(vectors, self.inputs.anchors, self.inputs.anchor_active)
            total = total + cfg.anchor_weight * terms["anchor"]
        terms["loss"] = total
        return terms

    def _diffusion_loss(self, cond: torch.Tensor) -> torch.Tensor:
        bank, sched, gen = self.inputs.latents, self.noise_scheduler, self.generator
        bb = self.backbone
        idx = torch.randint(len(bank), (cond.shape[0],), generator=gen)
        z0 = bank.sample(idx, gen)
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cond.shape[0],), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        kind = sched.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = sched.get_velocity(z0, noise, t)
        elif kind == "sample":
            target = z0
        else:
            raise TrainingError(f"unsupported scheduler prediction_type {kind!r}")
        pred = bb.unet(zt.to(bb.device, bb.dtype), t.to(bb.device), encoder_hidden_states=cond.to(bb.dtype)).sample
        return F.mse_loss(pred.float(), target.to(pred.device).float())

    # ---------------------------------------------------------------- step

    def step(self) -> dict[str, float]:
        """One optimiser step over grad_accum micro-batches; returns the mean loss terms."""
        accum = self.config.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for _ in range(accum):
            terms = self.micro_batch()
            (terms["loss"] / accum).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
        if not torch.isfinite(self.param.grad).all():
            raise TrainingError(f"non-finite gradient at step {self.step_count + 1}; lower lr (now {self.config.lr})")
        self.optimizer.step()
        self.step_count += 1
        with torch.no_grad():
            sums["norm"] = float(self.vectors().norm(dim=-1).mean())
        record = {"step": self.step_count, **{k: round(v, 6) for k, v in sums.items()}}
        self.history.append(record)
        return record

    def final_vectors(self) -> torch.Tensor:
        with torch.no_grad():
            return self.vectors().detach().float().cpu().clone()

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "param": self.param.detach().cpu().clone(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.param.copy_(state["param"].to(self.param))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step_count = int(state["step"])
        self.history = list(state["history"])


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(trainer: TokenTrainer, work_dir: Path, fingerprint: str) -> Path:
    """Atomically write the trainer state (temp file + rename), tagged with the request fingerprint."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"fingerprint": fingerprint, **trainer.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(work_dir: Path) -> dict[str, Any] | None:
    path = work_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as e:
        raise TrainingError(f"checkpoint {path} is unreadable ({e}); delete it to start the run over") from e
