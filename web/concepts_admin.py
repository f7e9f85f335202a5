"""Concept administration shared by the admin pages and the JSON API: register, train, activate, delete.

A registration stores the images in the concept registry (engine.concepts) and queues a "train"
job (dedupe key `train:<placeholder>`: one training run per concept at a time); the worker runs
trainer.train_concept, which records the version and makes it live when it finishes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from flask import url_for

from engine.concepts import Concept
from engine.preprocess import open_upright
from trainer import METHODS
from trainer.subspace import select_attributes
from trainer.vocabulary import attribute_vocabulary
from trainer.words import ConceptWordError, check_concept_words, with_method
from web.jobs import Job

from .errors import ApiError, bad_field, missing_field
from .uploads import CheckedImage

log = logging.getLogger(__name__)

MAX_VECTORS = 16  # token rows a registration may ask for
MAX_STEPS = 100_000  # training steps a registration or retrain may ask for
SUGGESTED_ATTRIBUTES = 12
METRIC_SUMMARY = ("norm_ratio", "cos_attributes_mean", "auc_target_vs_parent", "auc_target_vs_others",
                  "train_seconds", "steps")


@dataclass
class ConceptForm:
    placeholder: str  # '<aurora>'
    parent: str  # 'dress'
    attributes: list[str] | None  # None: chosen automatically at training time
    method: str  # one of trainer.METHODS
    num_vectors: int
    steps: int
    warnings: list[str]  # what trains but may not work well (trainer.words), shown with the registration


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_field(name, f"must be text, got {type(value).__name__}")
    return value.strip()


def int_field(data: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = data.get(name)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        value = int(raw)
    except (TypeError, ValueError):
        raise bad_field(name, f"must be a whole number from {lo} to {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise bad_field(name, f"must be from {lo} to {hi}, got {value}")
    return value


def parse_concept_form(data: Mapping[str, Any], train_defaults, max_steps: int = MAX_STEPS) -> ConceptForm:
    """Validate registration fields (form or JSON); ApiError names the field and the fix. The words themselves
    (placeholder vs parent, distinct attributes for the projection, the parent's warning) are trainer.words'."""
    name = _text(data, "placeholder")
    if not name:
        raise missing_field("placeholder", "the new word, e.g. '<aurora>' (lower-case letters, digits, '-', '_')")
    placeholder = name if name.startswith("<") else f"<{name}>"
    parent = _text(data, "parent")
    if not parent:
        raise missing_field("parent", "the word for the concept's category, e.g. 'dress'")
    if len(parent) > 60 or "<" in parent or ">" in parent:
        raise bad_field("parent", "must be a plain word or two (at most 60 characters, no '<' or '>')")
    raw_attrs = data.get("attributes")
    if isinstance(raw_attrs, str):
        attributes = raw_attrs.replace("\n", ",").split(",")
    elif isinstance(raw_attrs, (list, tuple)) and all(isinstance(a, str) for a in raw_attrs):
        attributes = list(raw_attrs)
    elif raw_attrs is None:
        attributes = []
    else:
        raise bad_field("attributes", "must be a list of words or a comma-separated string")
    if any(len(a.strip()) > 40 or "<" in a or ">" in a for a in attributes):
        raise bad_field("attributes", "each attribute is a plain word (at most 40 characters, no '<' or '>')")
    method = _text(data, "method") or train_defaults.method
    if method not in METHODS:
        raise bad_field("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        words = check_concept_words(placeholder, parent, attributes, with_method(train_defaults, method))
    except ConceptWordError as e:
        raise ApiError(400, e.code, f"field {e.field!r}: {e}", field=e.field) from e
    return ConceptForm(placeholder, words.parent, words.attributes, method,
                       int_field(data, "num_vectors", train_defaults.num_vectors, 1, MAX_VECTORS),
                       int_field(data, "steps", train_defaults.steps, 1, max_steps), words.warnings)


def register_concept(res, form: ConceptForm, images: Sequence[CheckedImage]) -> tuple[Concept, str]:
    """Store the concept and its images, queue its training; returns (concept, job id). A placeholder already
    registered (also by a concurrent request) raises engine.concepts.ConceptExists: 409 concept_exists."""
    concept = res.registry.register(form.placeholder, form.parent, [im.data for im in images],
                                    attributes=form.attributes, method=form.method, num_vectors=form.num_vectors)
    return concept, start_training(res, form.placeholder, form.steps)


def name_warnings(res, placeholder: str) -> list[str]:
    """A concept named by an ordinary catalog word: what shoppers typing it get (warned, never refused)."""
    from engine.query.understand import concept_name_warning

    found = concept_name_warning(placeholder, res.query.catalog.get(), res.query.config)
    return [found] if found else []


def start_training(res, placeholder: str, steps: int | None = None) -> str:
    """Queue a training run (or return the one already queued/running for this concept)."""
    res.registry.get(placeholder)
    config = {"steps": int(steps)} if steps else {}
    return res.jobs.submit("train", {"placeholder": placeholder, "config": config}, dedupe_key=train_key(placeholder))


def reconcile_registrations(res, grace_s: float | None = None) -> dict[str, list[str]]:
    """At start: remove the image folders of registrations killed before their commit, and queue the training
    a registration killed after its commit never asked for (engine.concept_repair; registrations younger than
    `grace_s`, default REGISTRATION_GRACE_S, are left alone: they may be in flight in another process).
    Returns {"removed": folder names, "queued": placeholders}."""
    from engine.concept_repair import REGISTRATION_GRACE_S, remove_orphan_folders, untrained

    grace = REGISTRATION_GRACE_S if grace_s is None else grace_s
    removed = remove_orphan_folders(res.registry, grace)
    queued = [c.placeholder for c in untrained(res.registry, grace) if training_job(res, c.placeholder) is None]
    for placeholder in queued:
        start_training(res, placeholder)
        log.warning("queued the training of %s: its registration was interrupted before asking for it", placeholder)
    return {"removed": removed, "queued": queued}


def train_key(placeholder: str) -> str:
    return f"train:{placeholder}"


def training_job(res, placeholder: str) -> Job | None:
    return res.jobs.latest("train", train_key(placeholder))


def delete_concept(res, placeholder: str) -> None:
    """Cancel its training, then remove the concept, its versions and files."""
    job = training_job(res, placeholder)
    if job is not None and job.active:
        res.jobs.request_cancel(job.id)
    res.registry.delete(placeholder)


def suggest_attributes(res, images: Sequence[CheckedImage], parent: str, k: int = SUGGESTED_ATTRIBUTES) -> list[str]:
    """The attribute words whose text features best match the images (trainer's own selection rule)."""
    pils = [open_upright(im.data) for im in images]
    with torch.no_grad():
        features = res.query.images.encode_pil(pils).float().cpu()
    vocabulary = attribute_vocabulary()
    return select_attributes(res.query.encoder, features, parent, vocabulary, min(k, len(vocabulary)))


def metric_summary(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key in METRIC_SUMMARY:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((key.replace("_", " "), f"{value:.3g}"))
    loss = (metrics.get("final_losses") or {}).get("loss")
    if isinstance(loss, (int, float)):
        out.append(("final loss", f"{loss:.4g}"))
    return out


def concept_json(res, concept: Concept, with_versions: bool = True) -> dict[str, Any]:
    job = training_job(res, concept.placeholder)
    out = {"placeholder": concept.placeholder, "name": concept.name, "parent": concept.parent,
           "attributes": concept.attributes, "method": concept.method, "num_vectors": concept.num_vectors,
           "status": concept.status, "active_version": concept.active_version, "created": concept.created,
           "updated": concept.updated, "metrics": concept.metrics, "error": concept.error,
           "images": len(res.registry.images(concept.placeholder)),
           "thumbnail": url_for("search.concept_thumb", name=concept.name),
           "training_job": job.to_json() if job is not None else None}
    if with_versions:
        out["versions"] = [{"version": v.version, "status": v.status, "method": v.method,
                            "backbone_id": v.backbone_id, "created": v.created, "updated": v.updated,
                            "metrics": v.metrics, "error": v.error}
                           for v in res.registry.versions(concept.placeholder)]
    return out
