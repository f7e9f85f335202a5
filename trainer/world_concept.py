"""Demo-world concepts: a held-out product's photos, catalog negatives and held-out evaluation sets.

For product P of category c (world splits, `world.build.make_world`):
- concept images: P's concept photos (the backbone never saw P);
- held-out positives: P's query photos, plus `extra_positives` fresh photos of P (new poses and
  contexts, seeded) so the AUCs rest on more than the 2-3 query photos a product has;
- parent images: photos of the other products of category c, split by product into catalog
  negatives for the classification loss (even positions) and held-out parent images (odd);
- other categories: photos of products of every other category.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from world.build import make_world
from world.captions import describe
from world.errors import WorldError
from world.render import render
from world.specs import random_photo
from world.vocab import CATEGORY_NOUNS

from .config import HeldOut, TrainingError


@dataclass
class WorldConcept:
    product_id: str
    placeholder: str  # '<p0042>'
    parent: str  # the category's canonical noun
    images: list  # PIL images
    catalog_negatives: list
    heldout: HeldOut
    caption: str  # the canonical visible description, e.g. 'red striped dress' (used by init 'caption')


def world_concept(product_id: str, seed: int = 0, size: int = 64, max_catalog: int = 16,
                  max_parent: int = 40, per_other_category: int = 8, extra_positives: int = 9) -> WorldConcept:
    world = make_world(seed)
    try:
        product = world.product(product_id)
    except WorldError as e:
        raise TrainingError(str(e)) from e
    if product_id not in world.splits.heldout:
        raise TrainingError(f"{product_id} is a training product of the demo backbone; pick a held-out product "
                            f"(e.g. {', '.join(world.splits.heldout[:4])}, ...) so the token learns something new")
    concept = [world.photo(pid) for pid in world.splits.concept[product_id]]
    queries = [world.photo(pid) for pid in world.splits.query[product_id]]
    rng = random.Random(f"coinage-trainer-eval:{seed}:{product_id}")
    queries += [random_photo(product, rng, index=100 + k) for k in range(extra_positives)]
    same = [p.id for p in world.products if p.category == product.category and p.id != product_id]
    catalog_ids, parent_ids = same[0::2], same[1::2]
    catalog = [world.photos_of(pid)[0] for pid in catalog_ids][:max_catalog]
    parent = [ph for pid in parent_ids for ph in world.photos_of(pid)[:2]][:max_parent]
    others = []
    for category in CATEGORY_NOUNS:
        if category == product.category:
            continue
        ids = [p.id for p in world.products if p.category == category][:per_other_category]
        others.extend(world.photos_of(pid)[1] for pid in ids)

    def draw(photos):
        return [render(ph, size) for ph in photos]

    return WorldConcept(
        product_id=product_id, placeholder=f"<{product_id}>", parent=CATEGORY_NOUNS[product.category][0],
        images=draw(concept), catalog_negatives=draw(catalog),
        heldout=HeldOut(positives=draw(queries), parent=draw(parent), others=draw(others)),
        caption=describe(product).split(" ", 1)[1],
    )


def heldout_products(seed: int = 0) -> list[str]:
    return list(make_world(seed).splits.heldout)
