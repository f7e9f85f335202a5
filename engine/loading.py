"""Load, build and save backbones: one code path for downloaded, local and in-code weights."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .backbones import MANIFEST, BackboneConfig, resolve_backbone, unreachable_message
from .device import select_device, select_dtype
from .errors import BackboneUnavailable

log = logging.getLogger(__name__)

CLIP_CONFIG = "open_clip_config.json"
CLIP_WEIGHTS = "open_clip_model.safetensors"


@dataclass
class Backbone:
    """A CLIP model and the diffusion stack its text tower conditions (unet/vae/scheduler may be None)."""

    config: BackboneConfig
    clip: torch.nn.Module  # open_clip CLIP (built-in text transformer)
    clip_cfg: dict[str, Any]  # open_clip model_cfg it was built from (saved as open_clip_config.json)
    preprocess_cfg: dict[str, Any]  # open_clip preprocessing (mean, std, size, interpolation)
    unet: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None
    scheduler: Any | None = None  # the training (noise) scheduler; samplers are derived from its config
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def id(self) -> str:
        """The identity stored with tokens and indexes: a token only loads into the backbone it was trained on."""
        return self.config.name

    @property
    def has_diffusion(self) -> bool:
        return self.unet is not None

    @property
    def text_width(self) -> int:
        return int(self.clip.token_embedding.weight.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.clip_cfg["embed_dim"])

    @property
    def context_length(self) -> int:
        return int(self.clip.positional_embedding.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.clip.token_embedding.weight.shape[0])

    @property
    def image_size(self) -> int:
        size = self.clip_cfg["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[0])

    def eval(self) -> "Backbone":
        for module in (self.clip, self.unet, self.vae):
            if module is not None:
                module.eval().requires_grad_(False)
        return self


def load_backbone(identifier: str = "tiny-random", device: str = "auto", dtype: str = "auto",
                  diffusion_dir: str | None = None, clip_weights: str | None = None,
                  with_diffusion: bool = True) -> Backbone:
    """Load a backbone by registry name, local directory or 'hf-hub:org/repo'.

    `clip_weights` overrides the open_clip pretrained tag with a local weights file; `diffusion_dir`
    points the diffusion stack at a local diffusers directory. Unreachable weights raise
    BackboneUnavailable naming the hub id, the cache path and the local-copy options.
    """
    config, _local = resolve_backbone(identifier, diffusion_dir=diffusion_dir)
    if clip_weights is not None:
        config = replace(config, clip_pretrained=str(clip_weights))
    dev = select_device(device)
    dt = select_dtype(dev, dtype)
    if config.builder is not None:
        from .tiny import build

        backbone = build(config)
    else:
        clip, clip_cfg, preprocess_cfg = _load_clip(config)
        backbone = Backbone(config, clip, clip_cfg, preprocess_cfg)
        if with_diffusion and config.diffusion:
            backbone.unet, backbone.vae, backbone.scheduler = _load_diffusion(config)
    if not with_diffusion:
        backbone.unet = backbone.vae = backbone.scheduler = None
    _check_compatible(backbone)
    return _to(backbone, dev, dt).eval()


def _to(backbone: Backbone, device: torch.device, dtype: torch.dtype) -> Backbone:
    for module in (backbone.clip, backbone.unet, backbone.vae):
        if module is None:
            continue
        module.to(device)
        if next(module.parameters()).dtype != dtype:
            module.to(dtype)
    backbone.device, backbone.dtype = device, dtype
    return backbone


def _load_clip(config: BackboneConfig) -> tuple[torch.nn.Module, dict, dict]:
    import open_clip

    try:
        model = open_clip.create_model(config.clip_model, pretrained=config.clip_pretrained,
                                       require_pretrained=config.clip_pretrained is not None)
    except (RuntimeError, OSError, ValueError) as e:
        if config.clip_model.startswith("local-dir:"):
            raise BackboneUnavailable(
                f"could not load the CLIP model from {config.clip_model[len('local-dir:'):]}: {e}. "
                f"The directory needs {CLIP_CONFIG} and {CLIP_WEIGHTS} as `coinage backbone save` writes them."
            ) from e
        source = _clip_hub_id(config)
        raise BackboneUnavailable(unreachable_message(source, e)) from e
    if config.clip_model.startswith("local-dir:"):
        data = json.loads((Path(config.clip_model[len("local-dir:"):]) / CLIP_CONFIG).read_text())
        clip_cfg, preprocess_cfg = data["model_cfg"], data.get("preprocess_cfg", {})
    else:
        clip_cfg = open_clip.get_model_config(config.clip_model.removeprefix("hf-hub:"))
        preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return model, clip_cfg, preprocess_cfg


def _clip_hub_id(config: BackboneConfig) -> str:
    """The hub repository open_clip downloads a pretrained tag from (for error messages)."""
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(config.clip_model, config.clip_pretrained or "")
        return cfg.get("hf_hub", "").rstrip("/") or f"{config.clip_model}:{config.clip_pretrained}"
    except Exception:  # noqa: BLE001 - only used to decorate an error message
        return f"{config.clip_model}:{config.clip_pretrained}"


def _load_diffusion(config: BackboneConfig) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    source = config.diffusion
    kwargs = {"revision": config.diffusion_revision} if config.diffusion_revision else {}
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs)
        sched_cfg = diffusers.DDPMScheduler.load_config(source, subfolder="scheduler", **kwargs)
        scheduler_cls = getattr(diffusers, sched_cfg["_class_name"])
        scheduler = scheduler_cls.from_config(sched_cfg)
    except (OSError, ValueError, KeyError) as e:
        if Path(source).is_dir():
            raise BackboneUnavailable(
                f"{source} is not a complete diffusers directory ({e}); it needs unet/, vae/ and scheduler/ "
                "as `save_pretrained` writes them"
            ) from e
        raise BackboneUnavailable(unreachable_message(source, e)) from e
    return unet, vae, scheduler


def _check_compatible(backbone: Backbone) -> None:
    """The UNet must attend to this text tower's hidden states; a mismatch is a config error, not a crash later."""
    if backbone.unet is None:
        return
    cross = backbone.unet.config.cross_attention_dim
    if cross != backbone.text_width:
        raise BackboneUnavailable(
            f"backbone {backbone.id!r}: the UNet cross-attends to width {cross} but the CLIP text tower is "
            f"{backbone.text_width} wide; pair the diffusion stack with the CLIP model it was trained with"
        )


def save_backbone(backbone: Backbone, directory: str | Path, dtype: str = "fp32", name: str | None = None) -> Path:
    """Write the local-directory layout that `load_backbone(<dir>)` reads.

    open_clip's `local-dir:` format (open_clip_config.json + open_clip_model.safetensors) plus diffusers'
    unet/, vae/, scheduler/ subfolders and our manifest.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    target = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    config = replace(backbone.config, name=name or backbone.config.name, clip_model="local-dir:.",
                     clip_pretrained=None, clip_cfg=None, builder=None,
                     diffusion="." if backbone.has_diffusion else None, diffusion_revision=None)
    (out / MANIFEST).write_text(json.dumps(config.to_json(), indent=2) + "\n")
    (out / CLIP_CONFIG).write_text(json.dumps(
        {"model_cfg": backbone.clip_cfg, "preprocess_cfg": backbone.preprocess_cfg}, indent=2) + "\n")
    state = {k: v.detach().to("cpu", target).contiguous() for k, v in backbone.clip.state_dict().items()}
    save_file(state, str(out / CLIP_WEIGHTS))
    if backbone.has_diffusion:
        for sub, module in (("unet", backbone.unet), ("vae", backbone.vae)):
            original = next(module.parameters()).dtype
            module.to(target).save_pretrained(out / sub)
            module.to(original)
        backbone.scheduler.save_pretrained(out / "scheduler")
    return out
