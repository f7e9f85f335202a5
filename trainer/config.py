"""What a training run is asked to do: the method, its hyperparameters and the request around them.

Every method comes from the one training loop; a method only switches loss terms and the
projection on or off (docs/method.md, "Training losses"):

| method              | diffusion loss | classification loss | subspace projection |
|---------------------|----------------|---------------------|---------------------|
| `prompt-tuning`     |                | yes                 |                     |
| `textual-inversion` | yes            |                     |                     |
| `ti+ce`             | yes            | yes                 |                     |
| `ti+ce+proj`        | yes            | yes                 | yes (the paper's)   |
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

from engine.backbones import DEFAULT_BACKBONE
from engine.concepts import MAX_IMAGES, MIN_IMAGES
from engine.errors import CoinageError

if TYPE_CHECKING:
    from engine.concepts import ConceptRegistry

    from .words import ConceptWords

ImageInput = Any  # a file path, image bytes, a PIL image, or a (3, H, W) tensor in [0, 1]


class TrainingError(CoinageError):
    """A training request cannot run as given; the message names the argument and the fix."""


@dataclass(frozen=True)
class MethodSpec:
    diffusion: bool  # l_SD: textual-inversion objective through the frozen UNet
    classification: bool  # l_CE: balanced BCE of "image of a * c" vs "image of a c" over positives/negatives
    projection: bool  # vectors used as P(e - mu) + mu, attribute-word PCA subspace


METHODS: dict[str, MethodSpec] = {
    "prompt-tuning": MethodSpec(diffusion=False, classification=True, projection=False),
    "textual-inversion": MethodSpec(diffusion=True, classification=False, projection=False),
    "ti+ce": MethodSpec(diffusion=True, classification=True, projection=False),
    "ti+ce+proj": MethodSpec(diffusion=True, classification=True, projection=True),
}
NEGATIVE_SOURCES = ("generated", "catalog", "both")

#: Paraphrases of "a photo of a {}" for the diffusion loss ({} becomes "<token> <parent>").
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a product photo of a {}",
    "a catalog photo of a {}",
    "product shot of a {}",
    "a close-up photo of a {}",
    "a photo of the {}",
    "{}",
)
#: Scene contexts of the sample grid saved with every token.
DEFAULT_SAMPLE_CONTEXTS: tuple[str, ...] = ("", "on a beach", "in the snow", "on a brick wall")


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run. Defaults are tuned on the demo world backbone (docs/trainer.md);
    the paper's SD 1.x settings are num_vectors=10, lr=5e-4, batch_size=1 x grad_accum=4."""

    method: str = field(default="ti+ce+proj", metadata=_help("training method", choices=tuple(METHODS)))
    num_vectors: int = field(default=4, metadata=_help("embedding rows of the token (paper: 10)"))
    steps: int = field(default=300, metadata=_help("optimizer steps"))
    lr: float = field(default=2e-3, metadata=_help("AdamW learning rate of the token rows"))
    batch_size: int = field(default=4, metadata=_help("images per diffusion micro-batch"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay on the token rows"))
    lambda_sd: float = field(default=1.0, metadata=_help("weight of the diffusion loss (when the method has it)"))
    lambda_ce: float = field(default=0.1, metadata=_help("weight of the classification loss (when the method has it)"))
    rank: int | None = field(default=None, metadata=_help("projection rank; default min(|A| - 1, 32)"))
    num_attributes: int = field(default=24, metadata=_help("k attribute words chosen when none are given"))
    negatives: str = field(default="both", metadata=_help(
        "classification negatives: generated ('image of a <parent>'), catalog images, or both; "
        "without catalog images 'both' uses the generated ones", choices=NEGATIVE_SOURCES))
    generated_negatives: int = field(default=8, metadata=_help("negatives generated from 'image of a <parent>'"))
    init: str | None = field(default=None, metadata=_help(
        "initialiser: a word (default: the parent word), or several words, e.g. a caption of the images, "
        "spread over the vectors in order; 'attributes' uses the top attribute words and the parent; "
        "'caption' (CLI, demo world) the product's visible description"))
    anchor_weight: float = field(default=0.0, metadata=_help(
        "weight of the anchor loss pulling each vector towards its nearest attribute/parent words (0: off)"))
    anchor_top: int = field(default=4, metadata=_help("number of active anchors (sparse attractors) per vector"))
    flip: bool = field(default=True, metadata=_help("horizontal-flip augmentation for the diffusion loss"))
    templates: tuple[str, ...] = field(default=DEFAULT_TEMPLATES, metadata=_help(
        "diffusion-loss prompt templates, each with one {} for '<token> <parent>'"))
    ce_prompt: str = field(default="image of a {}", metadata=_help(
        "classification prompt template ({} becomes '<token> <parent>' or '<parent>')"))
    ce_parent: str = field(default="word", metadata=_help(
        "the parent side of the two-way classifier: 'word' = g('image of a <parent>') (paper), 'attributes' = "
        "mean of g('image of a <attribute> <parent>') over the attribute words", choices=("word", "attributes")))
    ce_bias: bool = field(default=True, metadata=_help(
        "give the two-way classifier its best intercept at every step (training only), so a parent prompt whose "
        "similarity is miscalibrated for the backbone does not set the decision threshold"))
    seed: int = field(default=0, metadata=_help("seed of every random draw (same seed, same token)"))
    checkpoint_every: int = field(default=50, metadata=_help("steps between checkpoints (0: only at the end)"))
    samples: bool = field(default=True, metadata=_help("generate the sample grid (samples.png) after training"))
    sample_contexts: tuple[str, ...] = field(default=DEFAULT_SAMPLE_CONTEXTS, metadata=_help(
        "contexts of the sample grid, appended to 'a photo of a <token> <parent>'"))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainingError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        positive = ("num_vectors", "steps", "batch_size", "grad_accum", "num_attributes", "anchor_top")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise TrainingError(f"lr must be > 0, got {self.lr}")
        for name in ("lambda_sd", "lambda_ce", "anchor_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.rank is not None and self.rank < 1:
            raise TrainingError(f"rank must be >= 1 (or None for min(|A| - 1, 32)), got {self.rank}")
        if self.negatives not in NEGATIVE_SOURCES:
            raise TrainingError(f"negatives must be one of {', '.join(NEGATIVE_SOURCES)}, got {self.negatives!r}")
        if self.generated_negatives < 0 or self.checkpoint_every < 0:
            raise TrainingError("generated_negatives and checkpoint_every must be >= 0")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise TrainingError("templates must be a non-empty list of strings with exactly one '{}' each, "
                                "e.g. 'a photo of a {}'")
        if self.ce_prompt.count("{}") != 1:
            raise TrainingError(f"ce_prompt must contain exactly one '{{}}', got {self.ce_prompt!r}")
        spec = self.spec
        if spec.diffusion and self.lambda_sd == 0:
            raise TrainingError(f"method {self.method} uses the diffusion loss but lambda_sd is 0; "
                                "use method prompt-tuning for a classification-only token")
        if spec.classification and self.lambda_ce == 0:
            raise TrainingError(f"method {self.method} uses the classification loss but lambda_ce is 0; "
                                "use method textual-inversion for a diffusion-only token")

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def uses_negatives(self) -> bool:
        return self.spec.classification

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["templates"], data["sample_contexts"] = list(self.templates), list(self.sample_contexts)
        return data

    def result_fields(self) -> dict[str, Any]:
        """The fields that change the learned token (checkpoint compatibility)."""
        data = self.to_json()
        for name in ("checkpoint_every", "samples", "sample_contexts"):
            data.pop(name)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainingError(f"unknown training options {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        for name in ("templates", "sample_contexts"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class HeldOut:
    """Held-out images for the recognition AUCs (paper Table 3 protocol)."""

    positives: Sequence[ImageInput]  # other photos of the concept (never trained on)
    parent: Sequence[ImageInput]  # photos of other members of the parent category
    others: Sequence[ImageInput] = ()  # photos of other categories


@dataclass
class TrainRequest:
    """One concept to train. With `registry` the run is a new (or resumed) version of the registered
    concept; without it the version is written to `out_dir`."""

    placeholder: str  # '<aurora>'
    parent: str  # parent concept word, e.g. 'dress'
    images: Sequence[ImageInput]  # 3 to 50 example images of the concept
    backbone: Any = DEFAULT_BACKBONE  # a loaded engine Backbone (shared, never modified) or an identifier to load
    attributes: Sequence[str] | None = None  # attribute words A; None: the best num_attributes from the vocabulary
    config: TrainConfig = field(default_factory=TrainConfig)
    catalog_negatives: Sequence[ImageInput] = ()  # catalog images of the parent category
    heldout: HeldOut | None = None  # held-out images for the AUC diagnostics (skipped when None)
    # the concept registry: an open engine.concepts.ConceptRegistry (needed for PostgreSQL rows), or its root
    registry: Union["ConceptRegistry", str, Path, None] = None
    out_dir: Union[str, Path, None] = None  # version directory when there is no registry
    version: str | None = None  # registry version to resume; None: the newest unfinished compatible one
    resume: bool = True  # continue from a checkpoint of the same request when there is one
    activate: bool = True  # make the new version live when training succeeds (registry only)
    vocabulary: Sequence[str] | None = None  # attribute vocabulary for automatic selection (default: shipped)

    def check(self) -> "ConceptWords":
        """Raise TrainingError naming what cannot run; returns the checked words (their warnings included)."""
        from .words import check_concept_words

        words = check_concept_words(self.placeholder, self.parent, self.attributes, self.config)
        if not MIN_IMAGES <= len(self.images) <= MAX_IMAGES:
            raise TrainingError(f"training needs {MIN_IMAGES} to {MAX_IMAGES} images of the concept, "
                                f"got {len(self.images)}")
        if (self.registry is None) == (self.out_dir is None):
            raise TrainingError("give exactly one of registry (a registry or its root) or out_dir (a version directory)")
        if self.config.uses_negatives and self.config.negatives == "catalog" and not self.catalog_negatives:
            raise TrainingError("negatives='catalog' needs catalog images of the parent category "
                                "(catalog_negatives / --catalog DIR); or use negatives='generated'")
        return words


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
