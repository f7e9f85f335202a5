"""Training-loop cost: our `ti+ce+proj` step vs diffusers' reference textual-inversion step.

The reference (diffusers `examples/textual_inversion`, re-implemented minimally on the same
backbone): the whole input-embedding matrix, grown by the new rows, is trainable under AdamW
(weight decay 1e-2); after every step all rows but the new ones are restored from a copy. Ours
keeps the new rows as their own parameter and adds the classification loss and the projection.

Both loops use the same backbone, batch, images and prompts, and run in the same process,
interleaved in blocks so machine load hits both alike. Seconds per step are the median over
blocks; ratio = ours / reference (target <= 1.3). Peak memory: each loop runs once more in its
own subprocess, which resets the kernel's peak-RSS mark after loading the backbone and reports
the loop's peak resident set size (/proc VmHWM) above the resident size before the loop, plus
the whole process's resource.getrusage maximum.

    coinage bench training --backbone tiny-random --steps 8 --rounds 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import header, write_json

ROOT = Path(__file__).resolve().parent.parent

ATTRS = ["red", "old", "worn", "bright", "dark", "pink", "blue", "striped"]


def toy_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


class Ours:
    """Our loop: ti+ce+proj TokenTrainer step."""

    def __init__(self, backbone, args):
        from engine.images import ImageEncoder
        from engine.text import TextEncoder
        from trainer.config import TrainConfig
        from trainer.data import LatentBank
        from trainer.loop import LossInputs, TokenTrainer
        from trainer.subspace import Subspace, initial_vectors

        size = backbone.config.image_size
        pos, neg = toy_images(args.images, size, 0), toy_images(args.images, size, 1)
        encoder, images = TextEncoder(backbone), ImageEncoder(backbone)
        cfg = TrainConfig(method="ti+ce+proj", num_vectors=args.num_vectors, batch_size=args.batch_size,
                          lr=5e-3, templates=("a photo of a {}",), flip=False)
        with torch.no_grad():
            feats = images.encode_tensor(torch.cat([pos, neg])).float()
            parent = encoder.encode([cfg.ce_prompt.format("dress")]).pooled[0].float()
        inputs = LossInputs(LatentBank.encode(backbone, pos, flip=False), feats,
                            torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]), parent,
                            float(backbone.clip.logit_scale.exp().clamp(max=100)))
        self.trainer = TokenTrainer(backbone, encoder, "<bench>", "dress", cfg, inputs,
                                    initial_vectors(backbone, "dress", args.num_vectors),
                                    Subspace.from_words(backbone, ATTRS, None))

    def step(self) -> None:
        self.trainer.step()


class Reference:
    """diffusers' textual-inversion step: full embedding matrix in AdamW, frozen rows restored after."""

    def __init__(self, backbone, args):
        from diffusers import DDPMScheduler

        from engine.text import TextEncoder
        from engine.tokenizer import TokenLayout
        from trainer.data import LatentBank

        self.bb, self.args = backbone, args
        self.encoder = TextEncoder(backbone)
        table = backbone.clip.token_embedding.weight.detach().float()
        init = table[self.encoder.tokenizer.bpe.encode("dress")[0]]
        grown = torch.cat([table, init.expand(args.num_vectors, -1)]).clone()
        self.weight = torch.nn.Parameter(grown)  # (vocab + n, width), all trainable as in diffusers
        self.original = grown.detach().clone()
        self.keep = torch.ones(len(grown), dtype=torch.bool)
        self.keep[table.shape[0]:] = False  # index_no_updates
        self.optimizer = torch.optim.AdamW([self.weight], lr=5e-3, weight_decay=1e-2)
        layout = TokenLayout.from_sizes(backbone.vocab_size, {"<bench>": args.num_vectors})
        self.batch = self.encoder.tokenizer(["a photo of a <bench> dress"] * args.batch_size, layout)
        pos = toy_images(args.images, backbone.config.image_size, 0)
        self.latents = LatentBank.encode(backbone, pos, flip=False)
        self.sched = DDPMScheduler.from_config(backbone.scheduler.config)
        self.gen = torch.Generator().manual_seed(0)

    def step(self) -> None:
        bb, n = self.bb, self.args.batch_size
        x = F.embedding(self.batch.ids, self.weight)
        _, seq = self.encoder.tower(x, self.batch.eot_index)
        idx = torch.randint(len(self.latents), (n,), generator=self.gen)
        z0 = self.latents.sample(idx, self.gen)
        noise = torch.randn(z0.shape, generator=self.gen)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (n,), generator=self.gen)
        pred = bb.unet(self.sched.add_noise(z0, noise, t), t, encoder_hidden_states=seq).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.weight[self.keep] = self.original[self.keep]


LOOPS = {"ours": Ours, "reference": Reference}


def _load(args):
    from engine.loading import load_backbone

    return load_backbone(args.backbone, device="cpu")


def _status_mib(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the loop's own peak is visible after loading."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(args) -> dict:
    """Run one loop alone; report resident memory before the loop and its peak during the loop."""
    backbone = _load(args)
    loop = LOOPS[args.worker](backbone, args)
    rss_setup = _status_mib("VmRSS")
    reset = _reset_peak()
    loop.step()  # the first step allocates optimizer state and autograd buffers
    for _ in range(args.memory_steps):
        loop.step()
    peak = _status_mib("VmHWM") if reset else None
    return {"rss_mib_before_loop": round(rss_setup, 1) if rss_setup else None,
            "peak_rss_mib_during_loop": round(peak, 1) if peak else None,
            "loop_extra_peak_mib": round(peak - rss_setup, 1) if peak and rss_setup else None,
            "ru_maxrss_mib_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def timing(args) -> dict:
    backbone = _load(args)
    loops = {name: cls(backbone, args) for name, cls in LOOPS.items()}
    for loop in loops.values():
        for _ in range(args.warmup):
            loop.step()
    blocks: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(args.rounds):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loops[name].step()
            blocks[name].append((time.perf_counter() - t0) / args.steps)
    out = {name: {"s_per_step_median": round(statistics.median(b), 5), "s_per_step_blocks": [round(x, 5) for x in b]}
           for name, b in blocks.items()}
    out["ratio_ours_over_reference"] = round(out["ours"]["s_per_step_median"] /
                                             out["reference"]["s_per_step_median"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench training", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny-random")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-vectors", type=int, default=4)
    p.add_argument("--images", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=4, help="timed blocks per loop (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--memory-steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "training.json"))
    p.add_argument("--worker", choices=list(LOOPS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    result = timing(args)
    memory = {}
    for name in LOOPS:
        cmd = [sys.executable, "-m", "bench.training", "--worker", name, "--backbone", args.backbone, "--batch-size",
               str(args.batch_size), "--num-vectors", str(args.num_vectors), "--images", str(args.images),
               "--memory-steps", str(args.memory_steps), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        memory[name] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        **header("training", sys.argv[1:] if argv is None else argv,
                 processor=platform.processor() or platform.machine(), threads=args.threads,
                 loadavg_start=[round(x, 2) for x in load_start], loadavg_end=[round(x, 2) for x in os.getloadavg()]),
        "note": args.note,
        "config": {"backbone": args.backbone, "batch_size": args.batch_size, "num_vectors": args.num_vectors,
                   "steps_per_block": args.steps, "rounds": args.rounds, "warmup": args.warmup},
        **result,
        "target_ratio": 1.3,
        "memory": memory,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("ours", "reference", "ratio_ours_over_reference", "memory")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
