"""`train_concept`: one training job, from images to a recorded (and optionally activated) token version.

Stages: prepare (images, features, attributes, subspace, negatives, latents) -> train (checkpointed
every N steps; cancel checked between steps) -> diagnostics (norms, similarities, AUCs, samples)
-> write the version files -> record the version in the registry -> activate it.

A job holds no lock and no global state while it trains: the web worker calls it with its loaded
backbone for one concept after another while search keeps serving from the same backbone (read
only). Failures mark the version 'failed', cancellations 'cancelled'; neither touches the active
version, which only `ConceptRegistry.activate` changes.
"""
from __future__ import annotations

import errno
import json
import logging
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from engine.backbones import DEFAULT_BACKBONE

from .config import TrainConfig, TrainingError, TrainRequest, fingerprint
from .data import LatentBank, generate_negatives, image_digest, load_images, pil_batch
from .diagnostics import embedding_stats, loss_curves, recognition_aucs, sample_grid
from .loop import LossInputs, TokenTrainer, read_checkpoint, save_checkpoint
from .subspace import Subspace, anchor_targets, initial_vectors, select_attributes, word_embeddings


log = logging.getLogger(__name__)

Progress = Callable[[dict], None]
REQUEST_FILE = "request.json"
NEGATIVES_FILE = "negatives.safetensors"


class TrainingCancelled(Exception):
    """Internal: the cancel event was set; train_concept turns it into a 'cancelled' result."""

    def __init__(self, message: str, steps_done: int = 0, history: list | None = None):
        super().__init__(message)
        self.steps_done, self.history = steps_done, list(history or [])


class ConceptDeleted(TrainingCancelled):
    """Internal: the concept was deleted while it trained; the run stops without writing anything more."""


class _Registered:
    """Whether the concept still exists, asked before every write of the run (checkpoints, cached negatives,
    version files): a concept deleted while it trains gets no orphan files, and the run stops saying why."""

    def __init__(self, registry, placeholder: str):
        self.registry, self.placeholder = registry, placeholder

    @property
    def gone(self) -> bool:
        return self.registry is not None and self.placeholder not in self.registry

    def deleted(self, steps_done: int = 0, history: list | None = None) -> ConceptDeleted:
        return ConceptDeleted(f"{self.placeholder} was deleted while it trained; the run stopped at step "
                              f"{steps_done} and kept nothing (register the concept again to train it)",
                              steps_done, history)

    def check(self, steps_done: int = 0, history: list | None = None) -> None:
        if self.gone:
            raise self.deleted(steps_done, history)


@dataclass
class TrainResult:
    placeholder: str
    status: str  # 'ready' (token written and recorded) or 'cancelled'
    directory: Path  # the version directory
    version: str | None = None  # registry version id (None without a registry)
    token: Any = None  # engine.tokens.CustomToken (the projected rows), None when cancelled
    token_path: Path | None = None
    activated: bool = False  # the version was made live
    steps_done: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    losses: list[dict] = field(default_factory=list)  # per-step loss terms
    message: str = ""  # why a cancelled run stopped
    concept_deleted: bool = False  # cancelled because the concept was deleted while it trained (nothing kept)


def train_concept(request: TrainRequest, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> TrainResult:
    """Train (or resume) one concept's token; see the module docstring for the stages and guarantees."""
    words = request.check()
    for warning in words.warnings:
        log.warning("%s: %s", request.placeholder, warning)
    backbone = _backbone(request.backbone)
    pils = load_images(request.images, "concept image")
    catalog = load_images(request.catalog_negatives, "catalog negative")
    key = _fingerprint(request, backbone, pils, catalog)
    try:
        registry, version, directory = _target(request, backbone, key)
    except OSError as e:
        full = disk_full(e, request.placeholder)
        if full is None:
            raise
        raise full from e
    report = _Reporter(progress, request.placeholder, version)
    registered = _Registered(registry, request.placeholder)
    try:
        return _run(request, words, backbone, pils, catalog, key, registry, version, directory, report, cancel,
                    registered)
    except TrainingCancelled as e:
        if not isinstance(e, ConceptDeleted) and registered.gone:  # cancelled by the delete itself
            e = registered.deleted(e.steps_done, e.history)
        return _stopped(request, registry, version, directory, report, e)
    except Exception as e:
        if registered.gone:  # whatever failed (recording the version, a write into its removed folder) is moot
            return _stopped(request, registry, version, directory, report, registered.deleted())
        full = disk_full(e, request.placeholder, directory)
        if full is None:
            _failed(request, registry, version, report, e)
            raise
        _failed(request, registry, version, report, full)
        raise full from e
    except BaseException as e:
        _failed(request, registry, version, report, e)
        raise


def _stopped(request: TrainRequest, registry, version, directory: Path, report,
             e: TrainingCancelled) -> TrainResult:
    deleted = isinstance(e, ConceptDeleted)
    if deleted:  # a write that raced the delete may have left files: remove them and the folders they made
        shutil.rmtree(directory, ignore_errors=True)
        for folder in (directory.parent, directory.parent.parent):
            try:
                folder.rmdir()  # only when empty: a concept registered again under the name keeps its files
            except OSError:
                break
    elif registry is not None:
        registry.fail_version(request.placeholder, version, str(e), cancelled=True)
    report("cancelled", message=str(e))
    return TrainResult(request.placeholder, "cancelled", directory, version, steps_done=e.steps_done,
                       losses=e.history, message=str(e), concept_deleted=deleted)


class DiskFull(TrainingError):
    """The disk holding the registry filled up during training; the message names where and the fix."""


def disk_full(error: BaseException, placeholder: str, directory: Path | None = None) -> DiskFull | None:
    """A DiskFull in place of `error` when it says the disk (or quota) is full, else None."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = error.filename or directory
    elif isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error):
        where = "the concept registry's database"
    else:
        return None
    return DiskFull(f"no space left on the device while training {placeholder} (writing {where}): free space there "
                    "(or move COINAGE_DATA_DIR / --root to a larger disk) and train again; the run resumes from its "
                    "last checkpoint, and the live version stays as it was")


def _failed(request: TrainRequest, registry, version, report, e: BaseException) -> None:
    if registry is not None:
        try:
            registry.fail_version(request.placeholder, version, f"{type(e).__name__}: {e}")
        except Exception as record_error:  # noqa: BLE001 - e.g. the same full disk; `e` is raised by the caller
            log.warning("%s: could not record the failed run %s (%s: %s); the error was: %s", request.placeholder,
                        version, type(record_error).__name__, record_error, e)
    report("failed", message=f"{type(e).__name__}: {e}")


def request_from_registry(root: Any, placeholder: str, backbone: Any = DEFAULT_BACKBONE,
                          config: TrainConfig | None = None, **overrides: Any) -> TrainRequest:
    """A TrainRequest for a registered concept: its stored images, parent, attributes, method and size.

    `root` is an open ConceptRegistry, or the root of a SQLite one (see TrainRequest.registry).
    """
    from engine.concepts import as_registry

    registry = as_registry(root)
    concept = registry.get(placeholder)
    config = config or TrainConfig()
    config = replace(config, method=concept.method, num_vectors=concept.num_vectors)
    return TrainRequest(placeholder=concept.placeholder, parent=concept.parent,
                        images=registry.images(placeholder), backbone=backbone,
                        attributes=concept.attributes or None, config=config, registry=root, **overrides)


# ---------------------------------------------------------------- setup

def _backbone(backbone: Any):
    if isinstance(backbone, str):
        from engine.loading import load_backbone

        return load_backbone(backbone)
    return backbone


def _fingerprint(request: TrainRequest, backbone, pils: list, catalog: list) -> str:
    return fingerprint({
        "placeholder": request.placeholder, "parent": request.parent.strip(), "backbone": backbone.id,
        "attributes": list(request.attributes) if request.attributes is not None else None,
        "vocabulary": list(request.vocabulary) if request.vocabulary is not None else None,
        "config": request.config.result_fields(), "images": image_digest(pils), "catalog": image_digest(catalog),
    })


def _target(request: TrainRequest, backbone, key: str):
    """(registry or None, version or None, version directory), resuming a compatible run if asked."""
    if request.registry is None:
        directory = Path(request.out_dir)
        work = directory / "work"
        if work.exists() and not (request.resume and _matches(work, key)):
            if request.resume and read_checkpoint(work) is not None:
                raise TrainingError(f"{work} holds a checkpoint of a different request; pass resume=False "
                                    "(--no-resume) to start over, or another out_dir")
            shutil.rmtree(work)
        _write_request(work, key, request)
        return None, None, directory

    from engine.concepts import as_registry

    registry = as_registry(request.registry)
    ph = request.placeholder
    registry.get(ph)  # unknown concepts fail here, with the list of registered ones
    if request.version is not None:
        work = registry.work_dir(ph, request.version)
        if request.resume and work.exists() and not _matches(work, key) and read_checkpoint(work) is not None:
            raise TrainingError(f"{ph} version {request.version} was started with other settings or images; "
                                "start a new version (leave version unset) instead")
        registry.resume_version(ph, request.version)
        version = request.version
    else:
        version = None
        if request.resume:
            for v in registry.unfinished_versions(ph):
                work = registry.work_dir(ph, v.version)
                if _matches(work, key) and read_checkpoint(work) is not None:
                    registry.resume_version(ph, v.version)
                    version = v.version
                    break
        if version is None:
            version = registry.start_version(ph, request.config.method, backbone.id)
    _write_request(registry.work_dir(ph, version), key, request)
    return registry, version, registry.version_dir(ph, version)


def _matches(work: Path, key: str) -> bool:
    try:
        return json.loads((work / REQUEST_FILE).read_text())["fingerprint"] == key
    except (OSError, ValueError, KeyError):
        return False


def _write_request(work: Path, key: str, request: TrainRequest) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / REQUEST_FILE).write_text(json.dumps({
        "fingerprint": key, "placeholder": request.placeholder, "parent": request.parent,
        "attributes": list(request.attributes) if request.attributes is not None else None,
        "config": request.config.to_json()}, indent=2))


class _Reporter:
    """Progress events as dicts: phase, step, total, losses, elapsed and ETA seconds."""

    def __init__(self, callback: Progress | None, placeholder: str, version: str | None):
        self.callback, self.placeholder, self.version = callback, placeholder, version
        self.t0 = time.perf_counter()

    def __call__(self, phase: str, **info: Any) -> None:
        if self.callback is not None:
            self.callback({"placeholder": self.placeholder, "version": self.version, "phase": phase,
                           "elapsed_s": round(time.perf_counter() - self.t0, 2), **info})


# ---------------------------------------------------------------- the run

@dataclass
class _Prepared:
    inputs: LossInputs
    attributes: list[str]
    attribute_vectors: torch.Tensor
    subspace: Subspace | None
    init: torch.Tensor
    features: torch.Tensor  # CLIP features of the concept images (the sidecar)
    negatives: dict[str, int]
    parent_text: torch.Tensor  # tau_c, the classifier's parent side (also used by the diagnostics)


def _run(request: TrainRequest, words, backbone, pils, catalog, key, registry, version, directory, report, cancel,
         registered: _Registered):
    cfg = request.config
    t_start = time.perf_counter()
    report("prepare", warnings=words.warnings)
    prep = _prepare(request, words, backbone, pils, catalog, directory / "work", report, cancel, registered)
    t_prep = time.perf_counter() - t_start

    from engine.text import TextEncoder

    encoder = TextEncoder(backbone)
    trainer = TokenTrainer(backbone, encoder, request.placeholder, request.parent.strip(), cfg,
                           prep.inputs, prep.init, prep.subspace)
    work = directory / "work"
    state = read_checkpoint(work) if request.resume else None
    if state is not None:
        if state.get("fingerprint") != key:
            raise TrainingError(f"checkpoint in {work} belongs to another request; start over with resume=False")
        trainer.load_state_dict(state)
        log.info("%s: resuming at step %d of %d", request.placeholder, trainer.step_count, cfg.steps)
    resumed_at = trainer.step_count
    t_loop = time.perf_counter()
    while trainer.step_count < cfg.steps:
        if cancel is not None and cancel.is_set():
            registered.check(trainer.step_count, trainer.history)
            save_checkpoint(trainer, work, key)
            raise TrainingCancelled(f"cancelled at step {trainer.step_count} of {cfg.steps}",
                                    trainer.step_count, list(trainer.history))
        record = trainer.step()
        done = trainer.step_count - resumed_at
        elapsed = time.perf_counter() - t_loop
        eta = elapsed / done * (cfg.steps - trainer.step_count)
        report("train", step=trainer.step_count, total=cfg.steps,
               losses={k: v for k, v in record.items() if k != "step"}, eta_s=round(eta, 1))
        if cfg.checkpoint_every and trainer.step_count % cfg.checkpoint_every == 0 and trainer.step_count < cfg.steps:
            registered.check(trainer.step_count, trainer.history)
            save_checkpoint(trainer, work, key)
    t_train = time.perf_counter() - t_loop
    registered.check(trainer.step_count, trainer.history)
    save_checkpoint(trainer, work, key)

    report("diagnostics")
    vectors = trainer.final_vectors()
    metrics = _diagnose(request, backbone, encoder, prep, vectors, report, cancel)
    steps_run = trainer.step_count - resumed_at
    metrics.update({
        "method": cfg.method, "steps": cfg.steps, "num_vectors": cfg.num_vectors, "backbone": backbone.id,
        "prepare_seconds": round(t_prep, 2), "train_seconds": round(t_train, 2),
        "seconds_per_step": round(t_train / steps_run, 4) if steps_run else None,
        "resumed_at_step": resumed_at, "negatives": prep.negatives, "warnings": words.warnings,
        "final_losses": {k: v for k, v in trainer.history[-1].items() if k != "step"} if trainer.history else {},
    })
    if prep.subspace is not None:
        metrics["rank"] = prep.subspace.rank
        metrics["subspace_distance"] = round(float(prep.subspace.distance(vectors).max()), 6)
    registered.check(trainer.step_count, trainer.history)
    token = _write_version(request, backbone, directory, vectors, prep, metrics, trainer.history)
    activated = False
    if registry is not None:
        registry.record_version(request.placeholder, version, metrics)
        if request.activate:
            registry.activate(request.placeholder, version)
            activated = True
    shutil.rmtree(work, ignore_errors=True)
    report("done", step=trainer.step_count, total=cfg.steps, metrics=metrics)
    return TrainResult(request.placeholder, "ready", directory, version, token, directory / "token.safetensors",
                       activated, trainer.step_count, metrics, list(trainer.history))


def _prepare(request, words, backbone, pils, catalog, work: Path, report, cancel,
             registered: _Registered) -> _Prepared:
    from engine.images import ImageEncoder
    from engine.text import TextEncoder

    cfg, spec = request.config, request.config.spec
    parent = request.parent.strip()
    encoder, images = TextEncoder(backbone), ImageEncoder(backbone)
    features = images.encode_pil(pils).float().cpu()
    if words.attributes is not None:
        attributes = words.attributes  # distinct (trainer/words.py)
    else:
        from .vocabulary import attribute_vocabulary

        vocab = list(request.vocabulary) if request.vocabulary is not None else attribute_vocabulary()
        attributes = select_attributes(encoder, features, parent, vocab, cfg.num_attributes)
    attribute_vectors = word_embeddings(backbone, attributes)
    subspace = Subspace.from_words(backbone, attributes, cfg.rank) if spec.projection else None

    init_text = cfg.init or parent
    if init_text == "attributes":
        init_text = " ".join(attributes[:max(1, cfg.num_vectors - 1)] + [parent])
    init = initial_vectors(backbone, init_text, cfg.num_vectors)

    inputs = LossInputs(latents=None, ce_features=None, ce_labels=None, parent_text=None,
                        logit_scale=float(backbone.clip.logit_scale.exp().clamp(max=100)))
    counts = {"generated": 0, "catalog": 0}
    parent_text = _parent_text(encoder, cfg, parent, attributes)
    if spec.classification:
        negatives = []
        if cfg.negatives in ("generated", "both") and cfg.generated_negatives > 0:
            report("negatives", count=cfg.generated_negatives)
            generated = _generated_negatives(backbone, encoder, parent, cfg, work, cancel, registered)
            negatives.append(images.encode_tensor(generated).float().cpu())
            counts["generated"] = len(generated)
        if cfg.negatives in ("catalog", "both") and catalog:
            negatives.append(images.encode_pil(catalog).float().cpu())
            counts["catalog"] = len(catalog)
        if not negatives:
            raise TrainingError(f"method {cfg.method} needs negatives: set generated_negatives > 0 or pass "
                                "catalog images of the parent category")
        neg = torch.cat(negatives)
        inputs.ce_features = torch.cat([features, neg])
        inputs.ce_labels = torch.cat([torch.ones(len(features)), torch.zeros(len(neg))])
        inputs.parent_text = parent_text
    if spec.diffusion:
        inputs.latents = LatentBank.encode(backbone, pil_batch(pils, backbone.config.image_size), cfg.flip)
    if cfg.anchor_weight > 0:
        anchors = torch.cat([attribute_vectors, word_embeddings(backbone, [parent])])
        start = subspace.project(init) if subspace is not None else init
        inputs.anchors, inputs.anchor_active = anchors, anchor_targets(start, anchors, cfg.anchor_top)
    return _Prepared(inputs, attributes, attribute_vectors, subspace, init, features, counts, parent_text)


@torch.no_grad()
def _parent_text(encoder, cfg: TrainConfig, parent: str, attributes: list[str]) -> torch.Tensor:
    """tau_c of the classification loss: g_pool('image of a <parent>'), or with ce_parent='attributes'
    the normalised mean of g_pool('image of a <attribute> <parent>') over the attribute words."""
    import torch.nn.functional as F

    if cfg.ce_parent == "word":
        return encoder.encode([cfg.ce_prompt.format(parent)]).pooled[0].float().cpu()
    feats = encoder.encode([cfg.ce_prompt.format(f"{a} {parent}") for a in attributes]).pooled.float().cpu()
    return F.normalize(feats.mean(0), dim=0)


def _generated_negatives(backbone, encoder, parent: str, cfg: TrainConfig, work: Path, cancel,
                         registered: _Registered) -> torch.Tensor:
    """Generated negatives, cached in the work dir so a resumed run reuses the same images."""
    from safetensors.torch import load_file, save_file

    from engine.diffusion import GenerationCancelled

    path = work / NEGATIVES_FILE
    if path.is_file():
        return load_file(str(path))["images"]
    try:
        images = generate_negatives(backbone, encoder, parent, cfg.ce_prompt, cfg.generated_negatives,
                                    seed=cfg.seed + 1, cancel=cancel)
    except GenerationCancelled as e:
        raise TrainingCancelled(f"cancelled while generating negatives ({e})", 0, []) from e
    registered.check()
    work.mkdir(parents=True, exist_ok=True)
    save_file({"images": images.contiguous()}, str(path))
    return images


def _diagnose(request, backbone, encoder, prep: _Prepared, vectors: torch.Tensor, report, cancel) -> dict:
    from engine.images import ImageEncoder

    cfg = request.config
    stats = embedding_stats(vectors, prep.attributes, prep.attribute_vectors)
    metrics: dict[str, Any] = {k: v for k, v in stats.items() if k != "cos_attributes"}
    metrics["cos_attributes"] = stats["cos_attributes"]
    if request.heldout is not None:
        h = request.heldout
        images = ImageEncoder(backbone)

        def feats(items, what):
            return images.encode_pil(load_images(items, what)).float().cpu() if items else None

        with torch.no_grad():
            token_text = encoder.encode([cfg.ce_prompt.format(f"{request.placeholder} {request.parent.strip()}")],
                                        {request.placeholder: vectors.to(backbone.device)}).pooled[0].float().cpu()
        positives, parent = feats(h.positives, "held-out positive"), feats(h.parent, "held-out parent image")
        if positives is None or parent is None:
            raise TrainingError("heldout needs positives and parent images (others are optional)")
        metrics.update(recognition_aucs(token_text, positives, parent, feats(h.others, "held-out other image"),
                                        parent_text=prep.parent_text))
        metrics["heldout_counts"] = {"positives": len(h.positives), "parent": len(h.parent), "others": len(h.others)}
    return metrics


def _write_version(request, backbone, directory: Path, vectors, prep: _Prepared, metrics: dict,
                   history: list) -> Any:
    from engine.concepts import DIAGNOSTICS_FILE, FEATURES_FILE, SAMPLES_FILE, TOKEN_FILE, save_features
    from engine.diffusion import GenerationCancelled
    from engine.text import TextEncoder
    from engine.tokens import CustomToken, TokenMeta, save_token

    cfg = request.config
    directory.mkdir(parents=True, exist_ok=True)
    sample_prompts: list[str] = []
    if cfg.samples and backbone.has_diffusion:
        try:
            grid, sample_prompts = sample_grid(backbone, TextEncoder(backbone), request.placeholder, vectors,
                                               request.parent.strip(), cfg.sample_contexts, seed=cfg.seed)
        except GenerationCancelled as e:  # pragma: no cover - sample_grid is called without a cancel event
            raise TrainingCancelled(str(e), cfg.steps, list(history)) from e
        grid.save(directory / SAMPLES_FILE)
    summary = {k: v for k, v in metrics.items() if k not in ("cos_attributes",)}
    meta = TokenMeta(parent=request.parent.strip(), backbone_id=backbone.id, attributes=list(prep.attributes),
                     method=cfg.method, basis_id=prep.subspace.basis_id if prep.subspace is not None else None,
                     metrics=summary, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    token = CustomToken(request.placeholder, vectors, meta)
    save_features(directory / FEATURES_FILE, prep.features)
    diagnostics = {"placeholder": request.placeholder, "parent": request.parent.strip(),
                   "attributes": prep.attributes, "config": cfg.to_json(), "metrics": metrics,
                   "loss_curves": loss_curves(history), "sample_prompts": sample_prompts,
                   "subspace": {"basis_id": prep.subspace.basis_id, "rank": prep.subspace.rank}
                   if prep.subspace is not None else None}
    (directory / DIAGNOSTICS_FILE).write_text(json.dumps(diagnostics, indent=2) + "\n")
    save_token(token, directory / TOKEN_FILE)  # written last: its presence means the version is complete
    return token
