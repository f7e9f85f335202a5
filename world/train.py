"""Train the demo world's backbone: a small open_clip CLIP and a latent diffusion model on it.

Four phases, each seeded, checkpointed and resumable (a killed run picks up at its last checkpoint):

1. `clip`: contrastive image/caption training of a small ResNet image tower + text transformer
   (open_clip architecture, the real CLIP BPE tokenizer, context 32), with NegCLIP-style hard negatives:
   each caption also enters the batch with its product noun swapped and with its colour
   swapped, as extra negatives for its image. Without them a batch of 96 is told apart by
   colour, pattern and background alone and the image tower barely learns shapes (first
   run: zero-shot category accuracy 30% on held-out photos; docs/world.md).
2. `vae`: an AutoencoderKL (4 latent channels, 4x downsampling: 64 px -> 16x16 latents).
3. `decoder`: the VAE decoder fine-tuned alone on the frozen encoder's latents (as Stable Diffusion's
   ft-MSE decoder): truer colours, same latent space.
4. `unet`: a UNet2DConditionModel trained on the VAE latents with epsilon prediction, conditioned
   on the frozen CLIP text tower's hidden states exactly as the sd15 backbone is (TextEncoder).

The result is saved in the local-directory backbone layout (fp16) and loads with
`load_backbone("world")`. `--phases` trains some phases; the others load from their checkpoints, or with
`--base <backbone dir>` from a saved backbone (`--base world/backbone --phases decoder` fine-tunes the
shipped decoder and keeps every other part). Training captions sometimes name the hidden details (trim colour,
emblem) so that the image tower learns to see them, as web-trained CLIPs do; catalog and query
captions never do.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from engine.progress import bar as tqdm

from engine.backbones import BackboneConfig
from engine.images import ImageEncoder
from engine.loading import CLIP_CONFIG, CLIP_WEIGHTS, Backbone, save_backbone
from engine.text import TextEncoder
from engine.tiny import build_clip, build_scheduler, build_unet, build_vae
from engine.tokenizer import TokenLayout
from world.build import make_world, sample_training_pair
from world.errors import WorldError
from world.render import render_array
from world.vocab import CATEGORY_NOUNS, COLOURS

log = logging.getLogger(__name__)

WORLD_CLIP_CFG = {
    "embed_dim": 128,
    # a ModifiedResNet (open_clip's RN50 family) image tower: on 24k images its convolutions learn the product
    # silhouettes far sooner than a ViT-patch-8 of the same budget (held-out zero-shot category accuracy 71% after
    # 400 steps vs 57% after 1,500 for the ViT; docs/world.md)
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
PREPROCESS = {"size": 64, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
              "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic",
              "resize_mode": "shortest", "fill_color": 0}


@dataclass
class WorldTrainConfig:
    seed: int = 0  # world seed (catalog, splits) and training seed
    out: str = "world/backbone"  # where the finished backbone is saved (fp16)
    work: str = "var/world-train"  # dataset cache and checkpoints
    pairs: int = 24000  # rendered (image, caption) training pairs
    detail_prob: float = 0.3  # probability a training caption names the trim colour or emblem
    clip_steps: int = 1600
    hard_negatives: bool = True  # add category- and colour-swapped captions as negatives (NegCLIP)
    clip_batch: int = 96
    clip_lr: float = 1e-3
    vae_steps: int = 800
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6  # KL weight (small: a nearly deterministic autoencoder, as SD's)
    unet_steps: int = 7000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    uncond_prob: float = 0.1  # caption dropout for classifier-free guidance
    unet_channels: tuple[int, ...] = (64, 128, 128)
    vae_channels: tuple[int, ...] = (16, 32, 64)
    decoder_steps: int = 4000  # then fine-tune the VAE decoder alone on the frozen encoder's latents (0: skip)
    decoder_batch: int = 16
    decoder_lr: float = 2e-3
    threads: int = 2
    ckpt_every: int = 200
    phases: tuple[str, ...] = ("clip", "vae", "decoder", "unet")  # what this run trains
    base: str = ""  # a saved world backbone whose parts stand in for the phases this run leaves out


def world_backbone_config(name: str = "world") -> BackboneConfig:
    return BackboneConfig(name=name, clip_model="world-clip", clip_cfg=WORLD_CLIP_CFG, diffusion="builder",
                          cond_layer="last", pad="eot", image_size=64, steps=20, guidance_scale=4.0,
                          description="the demo world's CLIP + latent diffusion, trained here on CPU")


# ---------------------------------------------------------------- data

def detail_phrase(product, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return f" with {product.trim_colour} trim"
    if r < 0.8:
        return f" with a {product.emblem} emblem"
    return f" with {product.trim_colour} trim and a {product.emblem} emblem"


def build_dataset(cfg: WorldTrainConfig) -> tuple[np.ndarray, list[str]]:
    """Render (or load the cached) training pairs: uint8 images (N, 64, 64, 3) and captions."""
    cache = Path(cfg.work) / f"pairs-seed{cfg.seed}-n{cfg.pairs}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return data["images"], json.loads(str(data["captions"]))
    world = make_world(cfg.seed)
    rng = random.Random(f"world-train-{cfg.seed}")
    images = np.empty((cfg.pairs, 64, 64, 3), dtype=np.uint8)
    captions = []
    for i in tqdm(range(cfg.pairs), desc="render pairs", unit="img"):
        photo, text = sample_training_pair(world, rng)
        if rng.random() < cfg.detail_prob:
            text += detail_phrase(photo.product, rng)
        images[i] = render_array(photo, 64)
        captions.append(text)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, captions=np.array(json.dumps(captions)))
    tmp.replace(cache)
    return images, captions


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


_NOUNS = sorted({n for nouns in CATEGORY_NOUNS.values() for n in nouns}, key=len, reverse=True)
_NOUN_RE = re.compile(r"\b(" + "|".join(re.escape(n) for n in _NOUNS) + r")\b")
_COLOUR_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in sorted(COLOURS, key=len, reverse=True)) + r")\b")


def _swap_first(text: str, pattern: re.Pattern, options: list[str], rng: random.Random) -> str:
    """`text` with the first match of `pattern` replaced by a different option (unchanged if none matches)."""
    m = pattern.search(text)
    if m is None:
        return text
    other = rng.choice([o for o in options if o != m.group(1)])
    return text[:m.start()] + other + text[m.end():]


def hard_negatives(captions: list[str], seed: int) -> tuple[list[str], list[str]]:
    """For each caption, one with the product noun swapped for another category's and one with the (first,
    i.e. main) colour swapped: captions that differ from the truth only in what the image tower must see."""
    rng = random.Random(f"hard-negatives-{seed}")
    nouns = [nouns[0] for nouns in CATEGORY_NOUNS.values()]
    by_noun = {n: cat for cat, ns in CATEGORY_NOUNS.items() for n in ns}
    category, colour = [], []
    for text in captions:
        m = _NOUN_RE.search(text)
        own = by_noun[m.group(1)] if m else None
        category.append(_swap_first(text, _NOUN_RE, [n for n in nouns if by_noun[n] != own], rng))
        colour.append(_swap_first(text, _COLOUR_RE, list(COLOURS), rng))
    return category, colour


# ---------------------------------------------------------------- checkpoints

def _ckpt(cfg: WorldTrainConfig, phase: str) -> Path:
    return Path(cfg.work) / f"{phase}.ckpt"


_SHARED = ("seed", "pairs", "detail_prob")
PHASES = ("clip", "vae", "decoder", "unet")
_UPSTREAM = {"clip": (), "vae": (), "decoder": ("vae",), "unet": ("clip", "vae")}
_MODULE = {"clip": "clip", "vae": "vae", "decoder": "vae", "unet": "unet"}  # the Backbone attribute a phase trains
_PART_WEIGHTS = {p: CLIP_WEIGHTS if m == "clip" else f"{m}/diffusion_pytorch_model.safetensors"
                 for p, m in _MODULE.items()}


def reused(cfg: WorldTrainConfig, phase: str) -> bool:
    """Whether this run takes `phase`'s part from the base backbone instead of training it or loading its
    checkpoint."""
    return bool(cfg.base) and phase not in cfg.phases


def phase_settings(cfg: WorldTrainConfig, phase: str) -> dict:
    """The settings a phase's checkpoint depends on: its own fields, the data's, and those of the phases it
    builds on (the UNet learns on the VAE's latents and the CLIP text tower's states; the decoder on the
    encoder's). A part taken from `base` counts by its weights' digest."""
    if reused(cfg, phase):
        return {f"{phase}_from_sha256": _part_digest(cfg.base, phase)}
    fields = asdict(cfg)
    own = {k: v for k, v in fields.items() if k in _SHARED or k.startswith(f"{phase}_")
           or (phase == "clip" and k == "hard_negatives") or (phase == "unet" and k == "uncond_prob")}
    for up in _UPSTREAM[phase]:
        own.update(phase_settings(cfg, up))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(own.items())}


def _part_weights(base: str, phase: str) -> Path:
    weights = Path(base) / _PART_WEIGHTS[phase]
    if not weights.is_file():
        raise WorldError(f"--base {base}: no {_PART_WEIGHTS[phase]} there for the {phase} phase. Give a backbone "
                         f"directory that `coinage world train` saved (the shipped one is world/backbone), or "
                         f"add {phase} to --phases to train it.")
    return weights


def _part_digest(base: str, phase: str) -> str:
    weights = _part_weights(base, phase)
    stat = weights.stat()
    return _sha256(str(weights.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """A file's digest, once per version of it (phase settings are asked for at every checkpoint)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_base_part(cfg: WorldTrainConfig, backbone: Backbone, phase: str) -> None:
    """Put the base backbone's part for `phase` (fp16 on disk) into `backbone`, in fp32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    weights = _part_weights(cfg.base, phase)
    if phase == "clip":
        saved = json.loads((Path(cfg.base) / CLIP_CONFIG).read_text())["model_cfg"]
        if saved != json.loads(json.dumps(WORLD_CLIP_CFG)):
            raise WorldError(f"--base {cfg.base}: its CLIP architecture {saved} is not this trainer's "
                             f"({WORLD_CLIP_CFG}); add clip to --phases to train one.")
        backbone.clip.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
        return
    attr = _MODULE[phase]
    cls, field = (AutoencoderKL, "vae_channels") if attr == "vae" else (UNet2DConditionModel, "unet_channels")
    loaded = cls.from_pretrained(weights.parent, torch_dtype=torch.float32)
    # rebuilt from its config without `_name_or_path`: the saved backbone must not record where its base lay
    module = cls.from_config({k: v for k, v in loaded.config.items() if k != "_name_or_path"})
    module.load_state_dict(loaded.state_dict())
    if tuple(module.config.block_out_channels) != tuple(getattr(cfg, field)):
        raise WorldError(f"--base {cfg.base}: its {phase} has blocks {tuple(module.config.block_out_channels)}, "
                         f"not --{field.replace('_', '-')} {' '.join(map(str, getattr(cfg, field)))}; pass "
                         f"those, or add {phase} to --phases to train it.")
    setattr(backbone, attr, module)


def save_ckpt(cfg, phase: str, step: int, modules: dict, done: bool = False, seconds: float = 0.0) -> None:
    path = _ckpt(cfg, phase)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "done": done, "seconds": seconds, "settings": json.dumps(phase_settings(cfg, phase)),
                **{k: m.state_dict() for k, m in modules.items()}}, tmp)
    tmp.replace(path)


def load_ckpt(cfg, phase: str, modules: dict) -> tuple[int, bool, float]:
    """(step, done, training seconds so far, over every run that added to this checkpoint).

    A checkpoint written under other settings (another UNet width, step count, world seed...) is refused: resuming
    it would mix two trainings or fail on mismatched shapes."""
    path = _ckpt(cfg, phase)
    if not path.is_file():
        return 0, False, 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["settings"]) if "settings" in state else None
    wanted = phase_settings(cfg, phase)
    if saved is not None and saved != wanted:
        diff = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {wanted.get(k)!r}"
                         for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
        raise WorldError(f"{path} was trained with other {phase} settings ({diff}). Delete it to retrain "
                         f"the {phase} phase (and the phases after it), or pass --work <new directory>.")
    for k, m in modules.items():
        m.load_state_dict(state[k])
    return int(state["step"]), bool(state["done"]), float(state.get("seconds", 0.0))


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _loop(cfg, phase, total, modules, opt, base_lr, step_fn) -> float:
    start, done, before = load_ckpt(cfg, phase, {**modules, "opt": opt})
    if done:
        log.info("%s: already trained (checkpoint %s)", phase, _ckpt(cfg, phase))
        return before
    t0 = time.time() - before  # seconds of earlier runs count: the report gives the phase's whole training time
    bar = tqdm(range(start, total), desc=phase, initial=start, total=total, unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, base_lr)
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.ckpt_every == 0:
            save_ckpt(cfg, phase, step + 1, {**modules, "opt": opt}, seconds=time.time() - t0)
    seconds = time.time() - t0
    save_ckpt(cfg, phase, total, {**modules, "opt": opt}, done=True, seconds=seconds)
    return seconds


# ---------------------------------------------------------------- phases

def train_clip(cfg, backbone: Backbone, images: np.ndarray, captions: list[str]) -> float:
    clip = backbone.clip.train().requires_grad_(True)
    encoder = TextEncoder(backbone)
    texts = list(captions)
    if cfg.hard_negatives:
        swapped_category, swapped_colour = hard_negatives(captions, cfg.seed)
        texts += swapped_category + swapped_colour
    batch = encoder.tokenizer(texts, TokenLayout.from_sizes(backbone.vocab_size, {}))
    n = len(captions)

    norm = ImageEncoder(backbone)
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in clip.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.clip_lr, betas=(0.9, 0.98), eps=1e-6)

    def step_fn(step):
        idx = torch.randint(0, len(captions), (cfg.clip_batch,), generator=gen)
        x = norm.normalize(to_tensor(images[idx.numpy()]))
        img = F.normalize(clip.encode_image(x), dim=-1)
        rows = torch.cat([idx, idx + n, idx + 2 * n]) if cfg.hard_negatives else idx
        txt, _ = encoder.tower(encoder.embed(batch.ids[rows], None), batch.eot_index[rows])
        logits = clip.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B) or (B, 3B): negatives appended
        labels = torch.arange(len(idx))
        # image -> text over captions + hard negatives; text -> image over the true captions (NegCLIP)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :len(idx)].T, labels)) / 2

    seconds = _loop(cfg, "clip", cfg.clip_steps, {"clip": clip}, opt, cfg.clip_lr, step_fn)
    clip.eval().requires_grad_(False)
    return seconds


def train_vae(cfg, vae, images: np.ndarray) -> float:
    vae.train().requires_grad_(True)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)

    def step_fn(step):
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = to_tensor(images[idx.numpy()]) * 2 - 1
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(gen)).sample
        return F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + cfg.vae_kl * post.kl().mean()

    seconds = _loop(cfg, "vae", cfg.vae_steps, {"vae": vae}, opt, cfg.vae_lr, step_fn)
    vae.eval().requires_grad_(False)
    return seconds


def train_decoder(cfg, vae, images: np.ndarray) -> float:
    """Fine-tune the decoder alone on the frozen encoder's latents, as Stable Diffusion's ft-MSE VAE decoder was:
    sharper, truer colours, and the latent space the UNet learns on (or learned on) stays the same."""
    vae.eval().requires_grad_(False)
    trained = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in trained:
        p.requires_grad_(True)
    vae.decoder.train()
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    opt = torch.optim.AdamW(trained, lr=cfg.decoder_lr, weight_decay=0.0)

    def step_fn(step):
        idx = torch.randint(0, len(images), (cfg.decoder_batch,), generator=gen)
        x = to_tensor(images[idx.numpy()]) * 2 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(gen)
        recon = vae.decode(z).sample
        return F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)

    seconds = _loop(cfg, "decoder", cfg.decoder_steps, {"vae": vae}, opt, cfg.decoder_lr, step_fn)
    vae.eval().requires_grad_(False)
    return seconds


@torch.no_grad()
def encode_latents_all(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    out = [vae.encode(to_tensor(images[i:i + batch]) * 2 - 1).latent_dist.mean
           for i in tqdm(range(0, len(images), batch), desc="latents", unit="batch")]
    return torch.cat(out)


def train_unet(cfg, backbone: Backbone, latents: torch.Tensor, captions: list[str]) -> float:
    unet, scheduler = backbone.unet.train().requires_grad_(True), backbone.scheduler
    encoder = TextEncoder(backbone)
    batch = encoder.tokenizer(captions + [""], TokenLayout.from_sizes(backbone.vocab_size, {}))
    empty = len(captions)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=1e-2)
    scale = backbone.vae.config.scaling_factor

    def step_fn(step):
        idx = torch.randint(0, len(captions), (cfg.unet_batch,), generator=gen)
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.uncond_prob
        tidx = torch.where(drop, torch.full_like(idx, empty), idx)
        with torch.no_grad():
            _, cond = encoder.tower(encoder.embed(batch.ids[tidx], None), batch.eot_index[tidx])
        z0 = latents[idx] * scale
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.unet_batch,), generator=gen)
        zt = scheduler.add_noise(z0, noise, t)
        return F.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, noise)

    seconds = _loop(cfg, "unet", cfg.unet_steps, {"unet": unet}, opt, cfg.unet_lr, step_fn)
    unet.eval().requires_grad_(False)
    return seconds


# ---------------------------------------------------------------- driver

def _trained(cfg, phase: str, modules: dict) -> float:
    """Load a phase trained by an earlier run (`--phases` left it out); its seconds, for the report."""
    step, done, seconds = load_ckpt(cfg, phase, modules)
    if not done:
        raise WorldError(f"{_ckpt(cfg, phase)} is missing or unfinished (step {step}); train the {phase} phase "
                         f"first: coinage world train --phases {phase} (same settings and --work).")
    return seconds


def train_world(cfg: WorldTrainConfig, phases: tuple[str, ...] | None = None) -> dict:
    """Train `cfg.phases` (or `phases`); the others come from their finished checkpoints, or from `cfg.base`.

    Without a base, a run that leaves out the UNet saves checkpoints only (phases trained in separate
    processes); with one, every run saves a whole backbone to `cfg.out`."""
    if phases is not None:
        cfg = replace(cfg, phases=tuple(phases))
    unknown = set(cfg.phases) - set(PHASES)
    if unknown:
        raise WorldError(f"unknown phases {sorted(unknown)}; the phases are {', '.join(PHASES)}")
    for phase in PHASES:  # a reused part must not stand on a part this run retrains
        retrained = [up for up in _UPSTREAM[phase] if up in cfg.phases]
        if reused(cfg, phase) and retrained:
            raise WorldError(f"--base {cfg.base}: its {phase} learned on its own {retrained[0]}, which this run "
                             f"retrains; add {phase} to --phases too.")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_all = time.time()
    t0 = time.time()
    images, captions = build_dataset(cfg)
    timings = {"render_s": round(time.time() - t0, 1)}
    config = world_backbone_config()
    backbone = Backbone(config, build_clip(WORLD_CLIP_CFG, cfg.seed), dict(WORLD_CLIP_CFG), dict(PREPROCESS))
    backbone.vae = build_vae(cfg.seed + 2, block_out_channels=tuple(cfg.vae_channels), norm_num_groups=8,
                             sample_size=64)
    backbone.unet = build_unet(WORLD_CLIP_CFG["text_cfg"]["width"], 16, cfg.seed + 1,
                               block_out_channels=tuple(cfg.unet_channels), layers_per_block=1,
                               attention_head_dim=32, norm_num_groups=16)
    backbone.scheduler = build_scheduler()

    def phase(name: str, train) -> None:
        if name in cfg.phases:
            timings[f"{name}_s"] = round(train(), 1)
        elif reused(cfg, name):
            load_base_part(cfg, backbone, name)
            timings[f"{name}_s"] = 0.0
        else:
            module = _MODULE[name]
            timings[f"{name}_s"] = round(_trained(cfg, name, {module: getattr(backbone, module)}), 1)

    phase("clip", lambda: train_clip(cfg, backbone, images, captions))
    backbone.clip.eval().requires_grad_(False)
    phase("vae", lambda: train_vae(cfg, backbone.vae, images))
    if cfg.decoder_steps and not reused(cfg, "decoder"):  # a reused decoder came with the base's VAE
        phase("decoder", lambda: train_decoder(cfg, backbone.vae, images))
    backbone.vae.eval().requires_grad_(False)
    if "unet" in cfg.phases:
        latents = encode_latents_all(backbone.vae, images)
        backbone.vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
        timings["unet_s"] = round(train_unet(cfg, backbone, latents, captions), 1)
    elif cfg.base:
        phase("unet", None)
    timings["total_s"] = round(time.time() - t_all, 1)
    report = {"config": asdict(cfg), "timings": timings, "threads": torch.get_num_threads()}
    base_report = Path(cfg.base) / "train_report.json" if cfg.base else None
    if base_report is not None and base_report.is_file():  # provenance of the reused parts
        report["base_report"] = json.loads(base_report.read_text())
    if "unet" not in cfg.phases and not cfg.base:  # a partial run (phases in separate processes): checkpoints only
        return report
    out = save_backbone(backbone.eval(), cfg.out, dtype="fp16", name="world")
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage world train", description=__doc__.splitlines()[0])
    defaults = WorldTrainConfig()
    for name, value in asdict(defaults).items():
        if name == "phases":
            p.add_argument("--phases", nargs="+", default=list(value), choices=PHASES,
                           help="the phases this run trains; the others load from their checkpoints in --work, "
                                "or from --base")
        elif isinstance(value, tuple):
            p.add_argument(f"--{name.replace('_', '-')}", type=int, nargs="+", default=list(value))
        else:
            p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(p.parse_args(argv))
    cfg = WorldTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    report = train_world(cfg)
    print(json.dumps(report["timings"]))
    return 0
