"""`coinage concept ...`: train, list, activate, deactivate, delete, import and export custom tokens."""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from dataclasses import MISSING, fields, replace
from pathlib import Path

import torch
from engine.progress import bar as tqdm

from engine.backbones import DEFAULT_BACKBONE
from engine.concepts import ConceptRegistry, default_root
from engine.database import database_url_from_env
from engine.loading import load_backbone
from trainer import TrainRequest, train_concept
from trainer.config import TrainConfig, TrainingError
from trainer.data import image_digest, load_images
from trainer.words import check_concept_words
from trainer.world_concept import world_concept

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def register(sub) -> list[str]:
    p = sub.add_parser("concept", help="teach the search new words: train and manage custom tokens")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True

    train = csub.add_parser("train", help="train a custom token from images (a folder or a demo-world product)")
    train.add_argument("source", nargs="?", help="folder of 3-50 images of the concept")
    train.add_argument("--product", help="demo-world held-out product id (e.g. p0042) instead of a folder")
    train.add_argument("--world-seed", type=int, default=0, help="seed of the demo world (--product)")
    train.add_argument("--placeholder", help="token name, e.g. '<aurora>' (default: <folder name> or <product id>)")
    train.add_argument("--parent", help="parent concept word, e.g. 'dress' (required for a folder)")
    train.add_argument("--attributes", help="comma-separated attribute words (default: chosen automatically)")
    train.add_argument("--catalog", help="folder of catalog images of the parent category (classification negatives)")
    train.add_argument("--version", help="resume this registry version")
    train.add_argument("--no-resume", action="store_true",
                       help="start a new version even if a compatible one can resume")
    train.add_argument("--no-activate", action="store_true", help="record the version without making it live")
    _config_args(train)
    _common(train, backbone=True)
    train.set_defaults(func=_train)

    ls = csub.add_parser("list", help="registered concepts, their status and live version")
    ls.add_argument("--versions", action="store_true", help="also list every version")
    _common(ls)
    ls.set_defaults(func=_list)

    act = csub.add_parser("activate", help="make a trained version the live token")
    act.add_argument("name")
    act.add_argument("version")
    _common(act)
    act.set_defaults(func=_activate)

    deact = csub.add_parser("deactivate", help="stop serving a concept's token")
    deact.add_argument("name")
    _common(deact)
    deact.set_defaults(func=_deactivate)

    rm = csub.add_parser("delete", help="remove a concept, its versions and files")
    rm.add_argument("name")
    _common(rm)
    rm.set_defaults(func=_delete)

    imp = csub.add_parser("import", help="import a token file (ours or diffusers textual inversion) as a new version")
    imp.add_argument("file")
    imp.add_argument("--parent", required=True, help="parent concept word of the token")
    imp.add_argument("--placeholder", help="register it under this placeholder instead of the file's")
    imp.add_argument("--no-activate", action="store_true")
    imp.add_argument("--backbone", help="check the token's backbone id and width against this backbone")
    imp.add_argument("--device", default="auto")
    _common(imp)
    imp.set_defaults(func=_import)

    exp = csub.add_parser("export", help="copy a token file (diffusers-loadable safetensors) out of the registry")
    exp.add_argument("name")
    exp.add_argument("out", help="output file or directory")
    exp.add_argument("--version", help="default: the active version")
    _common(exp)
    exp.set_defaults(func=_export)
    return ["concept"]


def _common(p: argparse.ArgumentParser, backbone: bool = False) -> None:
    p.add_argument("--root", help="registry root (default: $COINAGE_HOME or ./var); its rows are in PostgreSQL "
                   "when COINAGE_DATABASE_URL is set")
    if backbone:
        p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name, local directory or hf-hub:org/repo")
        p.add_argument("--device", default="auto")
        p.add_argument("--threads", type=int, help="torch CPU threads for this command")


def _config_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with the field's own help text and default."""
    group = p.add_argument_group("training options")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        kind = str(f.type)
        helptext = f"{f.metadata.get('help', '')} (default: {default})"
        if kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=helptext)
        elif kind.startswith("tuple"):
            group.add_argument(flag, nargs="+", default=list(default), help=helptext)
        else:
            convert = float if kind.startswith("float") else int if kind.startswith("int") else str
            group.add_argument(flag, type=convert, default=default, help=helptext, choices=f.metadata.get("choices"))


def _config(args):
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    for name in ("templates", "sample_contexts"):
        values[name] = tuple(values[name])
    return TrainConfig(**values)


def _placeholder(name: str) -> str:
    return name if name.startswith("<") else f"<{name}>"


def _registry(args):
    return ConceptRegistry(args.root or default_root(), database_url=database_url_from_env())


def _folder_images(folder: str) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise TrainingError(f"{folder} is not a folder of images")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise TrainingError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.source is None) == (args.product is None):
        raise TrainingError("give either a folder of images or --product PRODUCT_ID (demo world)")
    config = _config(args)
    attributes = args.attributes.split(",") if args.attributes else None
    heldout = None
    catalog = _folder_images(args.catalog) if args.catalog else []
    if args.product:
        wc = world_concept(args.product, seed=args.world_seed)
        placeholder, parent, images, heldout = wc.placeholder, wc.parent, wc.images, wc.heldout
        catalog = catalog or wc.catalog_negatives
        if args.init == "caption":
            config = _replace(config, init=wc.caption)
    else:
        if args.init == "caption":
            raise TrainingError("--init caption needs a caption of the images: write it out, e.g. "
                                "--init 'red striped dress' (the demo world's --product mode writes its own)")
        placeholder = f"<{Path(args.source).resolve().name.lower()}>"
        images = _folder_images(args.source)
        parent = args.parent
        if not parent:
            raise TrainingError("--parent is required when training from a folder (e.g. --parent dress)")
    placeholder = _placeholder(args.placeholder) if args.placeholder else placeholder
    parent = args.parent or parent
    words = check_concept_words(placeholder, parent, attributes, config)  # before anything is registered
    for warning in words.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    attributes = words.attributes
    backbone = load_backbone(args.backbone, device=args.device)
    registry = _registry(args)
    blobs = [_png_bytes(im) for im in images]
    if placeholder in registry:
        _check_same_concept(registry, placeholder, parent, blobs)
        registry.update(placeholder, attributes=attributes or [], method=config.method,
                        num_vectors=config.num_vectors)
    else:
        registry.register(placeholder, parent, blobs, attributes, config.method, config.num_vectors)
    request = TrainRequest(placeholder=placeholder, parent=parent, images=blobs, backbone=backbone,
                           attributes=attributes, config=config, catalog_negatives=catalog, heldout=heldout,
                           registry=registry, version=args.version, resume=not args.no_resume,
                           activate=not args.no_activate)
    bar = _Bar(config.steps)
    try:
        result = train_concept(request, progress=bar)
    finally:
        bar.close()
    if result.status != "ready":
        print(f"{placeholder}: training {result.status} at step {result.steps_done}", file=sys.stderr)
        return 3
    shown = {k: v for k, v in result.metrics.items() if k not in ("cos_attributes", "final_losses")}
    print(json.dumps({"placeholder": placeholder, "version": result.version, "activated": result.activated,
                      "token": str(result.token_path), "metrics": shown}, indent=2))
    return 0


def _check_same_concept(registry, placeholder: str, parent: str, blobs: list[bytes]) -> None:
    """Retraining a registered concept must use its registered parent and images."""
    concept = registry.get(placeholder)
    if concept.parent != parent:
        raise TrainingError(f"{placeholder} is registered with parent {concept.parent!r}, not {parent!r}; "
                            "delete it first or use another --placeholder")
    if image_digest(load_images(registry.images(placeholder))) != image_digest(load_images(blobs)):
        raise TrainingError(f"{placeholder} is registered with other images; delete it first "
                            f"(`coinage concept delete {placeholder}`) or use another --placeholder")


def _replace(config, **changes):
    return replace(config, **changes)


def _png_bytes(image) -> bytes:
    if isinstance(image, Path):
        return image.read_bytes()
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class _Bar:
    """Progress events -> a tqdm bar on stderr (loss terms and ETA in the postfix)."""

    def __init__(self, total: int):
        self.total, self.bar = total, None

    def __call__(self, event: dict) -> None:
        phase = event["phase"]
        if phase == "train":
            if self.bar is None:
                self.bar = tqdm(total=event["total"], initial=event["step"] - 1, desc=event["placeholder"],
                                unit="step", file=sys.stderr)
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in event["losses"].items()}, refresh=False)
        elif phase in ("prepare", "negatives", "diagnostics", "cancelled", "failed"):
            print(f"[{event['placeholder']}] {phase}" + (f": {event['message']}" if "message" in event else ""),
                  file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _list(args) -> int:
    registry = _registry(args)
    concepts = registry.list()
    if not concepts:
        print("no concepts registered")
        return 0
    print(f"{'placeholder':16s} {'parent':10s} {'status':10s} {'active':7s} {'method':18s} {'AUC t/p':>8s}")
    for c in concepts:
        auc = c.metrics.get("auc_target_vs_parent")
        print(f"{c.placeholder:16s} {c.parent:10s} {c.status:10s} {c.active_version or '-':7s} {c.method:18s} "
              f"{'' if auc is None else f'{auc:.3f}':>8s}")
        if args.versions:
            for v in registry.versions(c.placeholder):
                error = f"  {v.error}" if v.error else ""
                print(f"    {v.version} {v.status:10s} {v.method:18s} {v.updated}{error}")
    return 0


def _activate(args) -> int:
    c = _registry(args).activate(_placeholder(args.name), args.version)
    print(f"{c.placeholder}: version {c.active_version} is live")
    return 0


def _deactivate(args) -> int:
    c = _registry(args).deactivate(_placeholder(args.name))
    print(f"{c.placeholder}: not served")
    return 0


def _delete(args) -> int:
    _registry(args).delete(_placeholder(args.name))
    print(f"{_placeholder(args.name)}: deleted")
    return 0


def _import(args) -> int:
    backbone_id = width = None
    if args.backbone:
        backbone = load_backbone(args.backbone, device=args.device, with_diffusion=False)
        backbone_id, width = backbone.id, backbone.text_width
    placeholder = _placeholder(args.placeholder) if args.placeholder else None
    v = _registry(args).import_token(args.file, parent=args.parent, placeholder=placeholder,
                                     backbone_id=backbone_id, width=width, activate=not args.no_activate)
    print(f"<{v.name}>: imported as version {v.version}" + ("" if args.no_activate else " (live)"))
    return 0


def _export(args) -> int:
    source = _registry(args).token_path(_placeholder(args.name), args.version)
    out = Path(args.out)
    if out.is_dir():
        out = out / f"{_placeholder(args.name)[1:-1]}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    print(f"wrote {out}")
    return 0
