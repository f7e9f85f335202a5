"""Named backbone configs and the one parser for backbone identifiers.

A backbone is an open_clip CLIP model plus an optional diffusion stack (diffusers UNet, VAE and
scheduler) conditioned by the *same* CLIP text tower. Identifiers resolve as:

- a registry name (`tiny-random`, `sd15`, `sd21`, `world`, or one added with `register_backbone`);
- a local directory holding `coinage_backbone.json` (the layout written by `save_backbone`);
- `hf-hub:org/repo`, a hub repository in that same layout (downloaded to the hub cache).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .errors import BackboneNotFound

MANIFEST = "coinage_backbone.json"
HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class BackboneConfig:
    name: str  # registry name or directory the backbone came from; stored with every token and index
    clip_model: str  # open_clip model name, or 'local-dir:<path>' / 'hf-hub:<repo>' as open_clip parses them
    clip_pretrained: str | None = None  # open_clip pretrained tag ('openai', 'laion2b_s32b_b79k') or weights file
    clip_cfg: dict[str, Any] | None = None  # explicit open_clip model_cfg (tiny configs built in code)
    diffusion: str | None = None  # diffusers repo id or local dir with unet/, vae/, scheduler/; 'builder': built in code; None: retrieval only
    diffusion_revision: str | None = None  # hub revision of the diffusion repo
    cond_layer: str = "last"  # hidden states the UNet attends to: 'last' (SD 1.x) or 'penultimate' (SD 2.x)
    pad: str = "eot"  # padding id of the diffusion tokenizer: 'eot' (SD 1.x) or 'zero' (SD 2.x, open_clip)
    image_size: int = 512  # generation resolution in pixels
    steps: int = 30  # default sampler steps for previews
    guidance_scale: float = 7.5  # classifier-free guidance for previews
    builder: str | None = None  # name of an in-code builder (seeded random weights), instead of loading
    seed: int = 0  # seed for in-code builders
    description: str = ""  # one line for `coinage backbone list`

    def __post_init__(self) -> None:
        if self.cond_layer not in ("last", "penultimate"):
            raise ValueError(f"cond_layer must be 'last' (SD 1.x) or 'penultimate' (SD 2.x), got {self.cond_layer!r}")
        if self.pad not in ("eot", "zero"):
            raise ValueError(f"pad must be 'eot' (SD 1.x) or 'zero' (SD 2.x / open_clip), got {self.pad!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BackboneConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown backbone config fields {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**data)


_REGISTRY: dict[str, BackboneConfig] = {}


def register_backbone(config: BackboneConfig, overwrite: bool = False) -> None:
    """Add a named config (tests add tiny ones). Refuses to shadow an existing name unless told to."""
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"backbone {config.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[config.name] = config


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_config(name: str) -> BackboneConfig:
    return _REGISTRY[name]


TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

register_backbone(BackboneConfig(
    name="tiny-random",
    clip_model="tiny-random",
    clip_cfg=TINY_CLIP_CFG,
    diffusion="builder",
    builder="tiny-random",
    image_size=32,
    steps=4,
    guidance_scale=3.0,
    description="seeded random weights built in code (seconds); for tests, outputs are meaningless",
))
register_backbone(BackboneConfig(
    name="sd15",
    clip_model="ViT-L-14-quickgelu",  # OpenAI CLIP uses QuickGELU; plain ViT-L-14 would use GELU
    clip_pretrained="openai",
    diffusion="stable-diffusion-v1-5/stable-diffusion-v1-5",
    cond_layer="last",
    pad="eot",
    image_size=512,
    description="OpenAI CLIP ViT-L/14 + Stable Diffusion 1.5 (its text encoder is this CLIP's text tower)",
))
register_backbone(BackboneConfig(
    name="sd21",
    clip_model="ViT-H-14",
    clip_pretrained="laion2b_s32b_b79k",
    diffusion="stabilityai/stable-diffusion-2-1",
    cond_layer="penultimate",
    pad="zero",
    image_size=768,
    description="OpenCLIP ViT-H/14 (LAION-2B) + Stable Diffusion 2.1 (penultimate-layer conditioning)",
))

# The demo world's backbone ships inside the package (trained here, see `coinage world train`); its registry
# entry names it so `coinage backbone list` shows it, and resolve_backbone reads its directory when asked for it.
WORLD_DIR = Path(__file__).resolve().parent.parent / "world" / "backbone"
register_backbone(BackboneConfig(
    name="world",
    clip_model="local-dir:world/backbone",
    description="the demo world's backbone shipped in world/backbone/ (trained by `coinage world train`)",
))

# The backbone every command, config and benchmark uses unless told otherwise.
DEFAULT_BACKBONE = "world"


def resolve_backbone(identifier: str, diffusion_dir: str | None = None,
                     download: Callable[[str], str] | None = None) -> tuple[BackboneConfig, Path | None]:
    """Resolve an identifier to (config, local directory or None).

    `diffusion_dir` points a registry backbone's diffusion stack at a local diffusers directory
    (e.g. a copy of Stable Diffusion 1.5 made on a machine with internet).
    """
    if identifier == "world":
        if not (WORLD_DIR / MANIFEST).is_file():
            raise BackboneNotFound(
                f"the demo world backbone is not at {WORLD_DIR}; train it with `coinage world train` "
                "or reinstall the package from a checkout that carries world/backbone/"
            )
        identifier = str(WORLD_DIR)
    if identifier in _REGISTRY:
        config = _REGISTRY[identifier]
        if diffusion_dir is not None:
            config = replace(config, diffusion=str(diffusion_dir))
        return config, None
    if identifier.startswith(HF_HUB_PREFIX):
        repo = identifier[len(HF_HUB_PREFIX):]
        if not repo or repo.count("/") != 1:
            raise BackboneNotFound(f"hub identifier {identifier!r} must look like 'hf-hub:org/repo'")
        local = Path((download or _snapshot_download)(repo))
        return _read_manifest(local, identifier), local
    path = Path(identifier).expanduser()
    if path.is_dir():
        return _read_manifest(path, identifier), path
    if "/" in identifier or identifier.startswith("."):
        raise BackboneNotFound(
            f"backbone directory {identifier!r} does not exist; give a directory written by "
            "`coinage backbone save`, a registry name, or 'hf-hub:org/repo'"
        )
    raise BackboneNotFound(
        f"unknown backbone {identifier!r}; registered backbones: {', '.join(list_backbones())}; "
        "or give a local backbone directory or 'hf-hub:org/repo'"
    )


def _read_manifest(path: Path, identifier: str) -> BackboneConfig:
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise BackboneNotFound(
            f"{path} has no {MANIFEST}, so it is not a Coinage backbone directory; "
            "write one with `coinage backbone save`, or pass a registry name and --diffusion-dir for a "
            "plain diffusers directory"
        )
    try:
        data = json.loads(manifest.read_text())
        config = BackboneConfig.from_json(data)
    except (ValueError, TypeError) as e:
        raise BackboneNotFound(f"{manifest} is not a valid backbone manifest: {e}") from e
    has_diffusion = (path / "unet").is_dir()
    return replace(config, name=config.name or identifier, clip_model=f"local-dir:{path}", clip_cfg=None,
                   clip_pretrained=None, diffusion=str(path) if has_diffusion else None, builder=None)


def _snapshot_download(repo: str) -> str:
    from huggingface_hub import snapshot_download

    from .errors import BackboneUnavailable
    from .hub import cache_first

    try:
        return cache_first(lambda: snapshot_download(repo), f"backbone repo {repo!r}")
    except Exception as e:  # network, auth, offline mode: all mean "not reachable"
        raise BackboneUnavailable(unreachable_message(repo, e)) from e


def unreachable_message(repo: str, error: BaseException) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return (
        f"could not fetch {repo!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
        f"Hub cache: {HF_HUB_CACHE} (set HF_HOME or HF_HUB_CACHE to move it). Fix: run once on a machine "
        "with internet to fill the cache, or copy the files and point at the local copy "
        "(`--backbone <dir>` for a Coinage backbone directory, `--diffusion-dir <dir>` for a diffusers "
        "directory, `--clip-weights <file>` for open_clip weights)."
    )

