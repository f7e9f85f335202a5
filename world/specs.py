"""Product and photo specifications, and the seeded samplers that draw them.

A `ProductSpec` fixes what a product looks like (visible attributes and hidden identity);
a `PhotoSpec` fixes one photograph of it (scene context, pose, lighting). Both are frozen
and hashable, and `world.render.render` is a pure function of a `PhotoSpec`.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from .errors import WorldError
from .vocab import CATEGORIES, COLOURS, CONTEXTS, EMBLEM_SLOTS, EMBLEMS, PATTERNS, contrasting


@dataclass(frozen=True)
class ProductSpec:
    """One product: a fixed combination of visible attributes and hidden identity."""

    id: str  # product id, "p0042" in a catalog; free-form for ad-hoc samples
    category: str  # one of vocab.CATEGORIES
    colour: str  # main body colour, a vocab.COLOURS name
    pattern: str  # one of vocab.PATTERNS
    pattern_colour: str | None  # second colour of the pattern; None iff pattern == "solid"
    trim_colour: str  # hidden: colour of the category's trim band (collar/sole/rim...) and emblem
    emblem: str  # hidden: emblem glyph, one of vocab.EMBLEMS
    emblem_pos: int  # hidden: which of the category's vocab.EMBLEM_SLOTS anchors holds the emblem
    shape: tuple[float, float, float]  # hidden: silhouette parameters in [0, 1] (flare, length...)

    @property
    def identity(self) -> tuple[str, str, str, str | None, str, str]:
        """What makes two products "the same thing" for hold-out checks (ignores slot and shape)."""
        return (self.category, self.colour, self.pattern, self.pattern_colour, self.trim_colour, self.emblem)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProductSpec":
        return validate_product(cls(**{**d, "shape": tuple(d["shape"])}))


@dataclass(frozen=True)
class JitterConfig:
    """Ranges of the per-photo pose and lighting jitter."""

    max_rotation: float = 12.0  # degrees; rotation is uniform in [-max, max]
    flip_prob: float = 0.5  # probability of mirroring the product left-right
    scale: tuple[float, float] = (0.8, 1.05)  # product size relative to the canonical drawing
    max_offset: float = 0.07  # product centre shift, as a fraction of the image side, per axis
    brightness: tuple[float, float] = (0.85, 1.15)  # multiplicative brightness range
    contrast: tuple[float, float] = (0.85, 1.15)  # contrast range around mid-gray


DEFAULT_JITTER = JitterConfig()


@dataclass(frozen=True)
class PhotoSpec:
    """One photograph of a product: scene context plus pose and lighting jitter."""

    product: ProductSpec  # what is photographed
    index: int  # k in the photo id "<product id>-<k>"; 0 for ad-hoc samples
    context: str  # scene, a vocab.CONTEXTS key
    rotation: float  # degrees, counter-clockwise
    flip: bool  # product mirrored left-right
    scale: float  # product size relative to the canonical drawing
    offset: tuple[float, float]  # product centre shift (x, y) as a fraction of the image side
    brightness: float  # multiplicative brightness
    contrast: float  # contrast around mid-gray
    bg_shift: tuple[float, float]  # where the image window sits in the background texture, [0, 1]^2
    bg_flip: bool  # background mirrored left-right

    @property
    def id(self) -> str:
        return f"{self.product.id}-{self.index}"

    def jitter_dict(self) -> dict[str, Any]:
        """Everything but the product, JSON-ready."""
        d = asdict(self)
        del d["product"]
        d["offset"], d["bg_shift"] = list(self.offset), list(self.bg_shift)
        return d

    @classmethod
    def from_dict(cls, product: ProductSpec, d: dict[str, Any]) -> "PhotoSpec":
        fields = {**d, "offset": tuple(d["offset"]), "bg_shift": tuple(d["bg_shift"])}
        return validate_photo(cls(product=product, **fields))


def _check_name(kind: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise WorldError(f"unknown {kind} {value!r}; pick one of: {', '.join(allowed)}")


def validate_product(p: ProductSpec) -> ProductSpec:
    """Check every field of `p` against the vocabulary; returns `p` or raises WorldError."""
    _check_name("category", p.category, CATEGORIES)
    _check_name("colour", p.colour, tuple(COLOURS))
    _check_name("pattern", p.pattern, PATTERNS)
    _check_name("trim_colour", p.trim_colour, tuple(COLOURS))
    _check_name("emblem", p.emblem, EMBLEMS)
    if (p.pattern == "solid") != (p.pattern_colour is None):
        raise WorldError(f"product {p.id}: pattern_colour must be None exactly when pattern is 'solid' "
                         f"(got pattern={p.pattern!r}, pattern_colour={p.pattern_colour!r})")
    if p.pattern_colour is not None:
        _check_name("pattern_colour", p.pattern_colour, tuple(COLOURS))
    if not 0 <= p.emblem_pos < EMBLEM_SLOTS:
        raise WorldError(f"product {p.id}: emblem_pos must be in 0..{EMBLEM_SLOTS - 1}, got {p.emblem_pos}")
    if len(p.shape) != 3 or not all(0.0 <= s <= 1.0 for s in p.shape):
        raise WorldError(f"product {p.id}: shape must be three floats in [0, 1], got {p.shape!r}")
    return p


def validate_photo(ph: PhotoSpec) -> PhotoSpec:
    """Check the context name and that the jitter is in a drawable range."""
    _check_name("context", ph.context, tuple(CONTEXTS))
    if not 0.3 <= ph.scale <= 1.5:
        raise WorldError(f"photo {ph.id}: scale {ph.scale} is outside [0.3, 1.5]; keep the product in frame")
    if not (0.2 <= ph.brightness <= 3.0 and 0.2 <= ph.contrast <= 3.0):
        raise WorldError(f"photo {ph.id}: brightness/contrast must be in [0.2, 3.0]")
    return ph


def _pick_contrasting(rng: random.Random, against: Sequence[str], avoid: Sequence[str] = ()) -> str:
    options = [c for c in COLOURS if all(contrasting(c, a) for a in against) and c not in avoid]
    return rng.choice(options)


def random_product(
    rng: random.Random,
    product_id: str = "sample",
    *,
    category: str | None = None,
    colour: str | None = None,
    pattern: str | None = None,
    pattern_colour: str | None = None,
) -> ProductSpec:
    """Draw a product; fixed visible attributes are kept, everything else is sampled from `rng`.

    The pattern colour contrasts with the body colour; the trim colour contrasts with the body
    and differs from the pattern colour, so the trim band and emblem stay visible.
    """
    category = category if category is not None else rng.choice(CATEGORIES)
    colour = colour if colour is not None else rng.choice(tuple(COLOURS))
    pattern = pattern if pattern is not None else rng.choice(PATTERNS)
    _check_name("colour", colour, tuple(COLOURS))
    if pattern == "solid":
        pattern_colour = None
    elif pattern_colour is None:
        pattern_colour = _pick_contrasting(rng, [colour])
    avoid = [pattern_colour] if pattern_colour else []
    trim_colour = _pick_contrasting(rng, [colour], avoid)
    shape = tuple(round(rng.random(), 2) for _ in range(3))
    return validate_product(ProductSpec(
        id=product_id, category=category, colour=colour, pattern=pattern, pattern_colour=pattern_colour,
        trim_colour=trim_colour, emblem=rng.choice(EMBLEMS), emblem_pos=rng.randrange(EMBLEM_SLOTS),
        shape=shape,  # type: ignore[arg-type]
    ))


def random_photo(
    product: ProductSpec,
    rng: random.Random,
    *,
    index: int = 0,
    context: str | None = None,
    jitter: JitterConfig = DEFAULT_JITTER,
) -> PhotoSpec:
    """Draw a photo of `product`: a context (unless given) and pose/lighting jitter from `jitter`."""
    context = context if context is not None else rng.choice(tuple(CONTEXTS))

    def u(lo: float, hi: float) -> float:
        return round(rng.uniform(lo, hi), 3)

    m = jitter.max_offset
    return validate_photo(PhotoSpec(
        product=product, index=index, context=context,
        rotation=u(-jitter.max_rotation, jitter.max_rotation),
        flip=rng.random() < jitter.flip_prob,
        scale=u(*jitter.scale),
        offset=(u(-m, m), u(-m, m)),
        brightness=u(*jitter.brightness),
        contrast=u(*jitter.contrast),
        bg_shift=(u(0.0, 1.0), u(0.0, 1.0)),
        bg_flip=rng.random() < 0.5,
    ))
