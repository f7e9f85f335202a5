"""The demo world: a procedural product catalog that the small backbone trains on.

vocab (words, colours, contexts, emblems) -> specs (ProductSpec, PhotoSpec, samplers)
-> render (silhouettes + backgrounds -> 64x64 RGB) -> captions -> build (make_world, splits,
training/eval samplers) -> catalog (write_catalog, `python -m world.catalog`).
"""
