"""Build a world from a seed: products (in families of look-alikes), their photos, the splits.

`make_world(seed)` is deterministic: every random choice comes from a `random.Random` seeded
with a string naming the seed and the stage, so the same seed gives the same world in any
process. The backbone trainer samples unlimited extra pairs with `sample_training_pair`,
which never produces a held-out combination or a held-out product.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Mapping, Sequence

from .captions import HELDOUT_TEMPLATES, caption
from .errors import WorldError
from .specs import DEFAULT_JITTER, JitterConfig, PhotoSpec, ProductSpec, random_photo, random_product
from .vocab import CATEGORIES, COLOURS, CONTEXTS, PATTERNS

Combo = tuple[str, str, str]  # (category, colour, context)


@dataclass(frozen=True)
class SplitConfig:
    """How a world is split and how hard its products are to tell apart."""

    heldout_products: int = 48  # products whose photos the backbone never sees (custom-token concepts)
    concept_photos: int = 5  # photos per held-out product used to train its token; the rest are queries
    heldout_combos: int = 48  # (category, colour, context) triples the backbone never trains on
    max_combos_per_pair: int = 2  # at most this many contexts held out per (category, colour)
    family_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)  # P(family of 1, 2, 3 look-alikes)


@dataclass(frozen=True)
class Splits:
    """Which products and photos each consumer may use."""

    train: tuple[str, ...]  # product ids the backbone may train on
    heldout: tuple[str, ...]  # product ids reserved for the custom-token benchmark
    concept: Mapping[str, tuple[str, ...]]  # held-out product id -> photo ids for training its token
    query: Mapping[str, tuple[str, ...]]  # held-out product id -> photo ids to retrieve (distinct contexts)
    heldout_combos: frozenset[Combo]  # (category, colour, context) never in backbone training
    heldout_templates: tuple[str, ...] = HELDOUT_TEMPLATES  # caption templates never in training


@dataclass(frozen=True)
class World:
    """A generated world: the catalog's products and photos plus the splits."""

    seed: int  # the seed everything was drawn from
    products: tuple[ProductSpec, ...]  # in id order, "p0000".."pNNNN"
    photos: tuple[PhotoSpec, ...]  # product-major, photo index minor
    families: Mapping[str, str] = field(repr=False)  # product id -> family id ("f012"); a family shares looks
    splits: Splits = field(repr=False)

    @cached_property
    def _by_product(self) -> dict[str, ProductSpec]:
        return {p.id: p for p in self.products}

    @cached_property
    def _by_photo(self) -> dict[str, PhotoSpec]:
        return {ph.id: ph for ph in self.photos}

    @cached_property
    def heldout_identities(self) -> frozenset[tuple]:
        """`ProductSpec.identity` of every held-out product."""
        return frozenset(self._by_product[pid].identity for pid in self.splits.heldout)

    def product(self, product_id: str) -> ProductSpec:
        try:
            return self._by_product[product_id]
        except KeyError as e:
            raise WorldError(f"no product {product_id!r} in this world (ids run p0000..p{len(self.products) - 1:04d})") from e

    def photo(self, photo_id: str) -> PhotoSpec:
        try:
            return self._by_photo[photo_id]
        except KeyError as e:
            raise WorldError(f"no photo {photo_id!r} in this world; photo ids look like 'p0042-3'") from e

    def photos_of(self, product_id: str) -> tuple[PhotoSpec, ...]:
        return tuple(ph for ph in self.photos if ph.product.id == product_id)

    def allowed_contexts(self, category: str, colour: str) -> tuple[str, ...]:
        """Contexts the backbone may see (category, colour) in."""
        held = self.splits.heldout_combos
        return tuple(c for c in CONTEXTS if (category, colour, c) not in held)

    def is_trainable(self, photo: PhotoSpec) -> bool:
        """May the backbone train on `photo`? (not a held-out product, not a held-out combination)"""
        p = photo.product
        return (p.identity not in self.heldout_identities
                and (p.category, p.colour, photo.context) not in self.splits.heldout_combos)

    def train_photos(self) -> tuple[PhotoSpec, ...]:
        """The catalog photos of the train products (all of them are trainable)."""
        train = set(self.splits.train)
        return tuple(ph for ph in self.photos if ph.product.id in train)


def _stage_rng(seed: int, stage: str) -> random.Random:
    return random.Random(f"coinage-world:{seed}:{stage}")


class _Deck:
    """Draws values in shuffled rounds, so every value appears once per round (coverage)."""

    def __init__(self, values: Sequence[str], rng: random.Random):
        self.values = list(values)
        self.rng = rng
        self.left: list[str] = []

    def draw(self) -> str:
        if not self.left:
            self.left = self.values[:]
            self.rng.shuffle(self.left)
        return self.left.pop()


def _heldout_combos(rng: random.Random, cfg: SplitConfig) -> frozenset[Combo]:
    triples = [(cat, col, ctx) for cat in CATEGORIES for col in COLOURS for ctx in CONTEXTS]
    rng.shuffle(triples)
    per_pair: dict[tuple[str, str], int] = {}
    chosen: list[Combo] = []
    for cat, col, ctx in triples:
        if len(chosen) == cfg.heldout_combos:
            break
        if per_pair.get((cat, col), 0) < cfg.max_combos_per_pair:
            per_pair[(cat, col)] = per_pair.get((cat, col), 0) + 1
            chosen.append((cat, col, ctx))
    return frozenset(chosen)


def _products(rng: random.Random, n: int, cfg: SplitConfig) -> tuple[list[ProductSpec], dict[str, str]]:
    categories, colours, patterns = (_Deck(v, rng) for v in (CATEGORIES, list(COLOURS), PATTERNS))
    products: list[ProductSpec] = []
    families: dict[str, str] = {}
    seen: set[tuple] = set()
    family = 0
    while len(products) < n:
        size = min(rng.choices((1, 2, 3), weights=cfg.family_weights)[0], n - len(products))
        cat, col, pat = categories.draw(), colours.draw(), patterns.draw()
        first = random_product(rng, category=cat, colour=col, pattern=pat)
        members = [first] + [random_product(rng, category=cat, colour=col, pattern=pat,
                                            pattern_colour=first.pattern_colour) for _ in range(size - 1)]
        for m in members:
            if m.identity in seen:
                continue  # an exact look-alike of an existing product: drop it, the loop refills
            seen.add(m.identity)
            pid = f"p{len(products):04d}"
            products.append(replace(m, id=pid))
            families[pid] = f"f{family:03d}"
        family += 1
    return products, families


def _pick_heldout(rng: random.Random, products: Sequence[ProductSpec], k: int) -> list[str]:
    """`k` product ids, round-robin over categories so each category has held-out products."""
    by_cat = {c: [p.id for p in products if p.category == c] for c in CATEGORIES}
    for ids in by_cat.values():
        rng.shuffle(ids)
    order = list(CATEGORIES)
    rng.shuffle(order)
    picked: list[str] = []
    while len(picked) < k:
        for c in order:
            if by_cat[c] and len(picked) < k:
                picked.append(by_cat[c].pop())
    return sorted(picked)


def _check_args(n_products: int, photos_per_product: int, cfg: SplitConfig) -> None:
    if cfg.heldout_products < 1 or n_products < cfg.heldout_products + len(CATEGORIES):
        raise WorldError(
            f"n_products={n_products} leaves too few train products next to "
            f"heldout_products={cfg.heldout_products}; use n_products >= heldout_products + {len(CATEGORIES)} "
            "(or a SplitConfig with fewer held-out products)")
    if photos_per_product < cfg.concept_photos + 1:
        raise WorldError(
            f"photos_per_product={photos_per_product} leaves no query photo after {cfg.concept_photos} "
            f"concept photos; use photos_per_product >= {cfg.concept_photos + 1}")
    if cfg.max_combos_per_pair >= len(CONTEXTS):
        raise WorldError(f"max_combos_per_pair must be below the {len(CONTEXTS)} contexts so every "
                         "(category, colour) keeps a trainable context")


def make_world(seed: int, n_products: int = 320, photos_per_product: int = 8,
               config: SplitConfig | None = None) -> World:
    """Generate the world for `seed`: products, `photos_per_product` photos each, and splits."""
    cfg = config or SplitConfig()
    _check_args(n_products, photos_per_product, cfg)
    combos = _heldout_combos(_stage_rng(seed, "combos"), cfg)
    products, families = _products(_stage_rng(seed, "products"), n_products, cfg)
    heldout = _pick_heldout(_stage_rng(seed, "heldout"), products, cfg.heldout_products)
    held = set(heldout)

    photos: list[PhotoSpec] = []
    concept: dict[str, tuple[str, ...]] = {}
    query: dict[str, tuple[str, ...]] = {}
    for p in products:
        rng = _stage_rng(seed, f"photos:{p.id}")
        pool = [c for c in CONTEXTS if p.id in held or (p.category, p.colour, c) not in combos]
        rng.shuffle(pool)
        mine = [random_photo(p, rng, index=k, context=pool[k % len(pool)]) for k in range(photos_per_product)]
        photos.extend(mine)
        if p.id in held:
            concept[p.id] = tuple(ph.id for ph in mine[:cfg.concept_photos])
            seen_ctx: set[str] = set()
            queries = []
            for ph in mine[cfg.concept_photos:]:
                if ph.context not in seen_ctx:  # one query per context, so the context pins the photo
                    seen_ctx.add(ph.context)
                    queries.append(ph.id)
            query[p.id] = tuple(queries)

    splits = Splits(
        train=tuple(p.id for p in products if p.id not in held), heldout=tuple(heldout),
        concept=concept, query=query, heldout_combos=combos,
    )
    return World(seed=seed, products=tuple(products), photos=tuple(photos), families=families, splits=splits)


def sample_training_pair(world: World, rng: random.Random,
                         jitter: JitterConfig = DEFAULT_JITTER) -> tuple[PhotoSpec, str]:
    """A fresh (photo, caption) pair the backbone may train on: a new random product, never a
    held-out one, in a context outside the held-out combinations, captioned with a train template."""
    while True:
        p = random_product(rng, "train-sample")
        if p.identity not in world.heldout_identities:
            break
    ph = random_photo(p, rng, context=rng.choice(world.allowed_contexts(p.category, p.colour)), jitter=jitter)
    return ph, caption(ph, rng)


def sample_eval_pair(world: World, rng: random.Random, heldout_templates: bool = False,
                     jitter: JitterConfig = DEFAULT_JITTER) -> tuple[PhotoSpec, str]:
    """A (photo, caption) pair from a held-out (category, colour, context) combination, for
    measuring backbone generalisation; `heldout_templates` also uses the held-out templates."""
    cat, col, ctx = rng.choice(sorted(world.splits.heldout_combos))
    while True:
        p = random_product(rng, "eval-sample", category=cat, colour=col)
        if p.identity not in world.heldout_identities:
            break
    ph = random_photo(p, rng, context=ctx, jitter=jitter)
    return ph, caption(ph, rng, heldout=heldout_templates)
