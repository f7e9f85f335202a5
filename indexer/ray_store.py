"""An in-process store (the embedded store, qdrant-client's local mode) shared by the driver and the Ray workers.

Such a store opens in one process only, so on the Ray path one actor, `StoreHost`, opens it and every store call
of the driver and the stages goes to that actor (`RemoteStore` forwards them). A Qdrant server needs none of
this: the driver and every worker open their own client (indexer.ray_stages.StageConfig.store).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from engine.store import StoreConfig, marks, open_store


class StoreHost:
    """The actor holding the store (created by `start_host` with ray.remote)."""

    def __init__(self, config: StoreConfig):
        self.store = open_store(config)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.store, name)(*args, **kwargs)

    def apply(self, fn, args: tuple) -> Any:
        """`fn(store, *args)` here: for module functions that look at the store's type (engine.store.artifacts:
        the vocabulary is a file beside an embedded collection, points in a server's)."""
        return fn(self.store, *args)

    def freeze(self, collection: str) -> None:
        """Flush and close `collection` so the next call reopens it from disk (the embedded store's
        frozen_collection, entered and left here); nothing for a store without one (a server's)."""
        frozen = getattr(self.store, "frozen_collection", None)
        if frozen is not None:
            with frozen(collection):
                pass

    def close(self) -> None:
        self.store.close()


def start_host(config: StoreConfig):
    """The StoreHost actor for `config` (no CPU reserved: it only waits on the store)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(StoreHost).remote(config)


class RemoteStore:
    """A VectorStore-shaped proxy: `store.upsert(...)` runs on the StoreHost actor; `marks` forwards the
    engine.store.marks operations likewise. Errors arrive as the store raised them (Ray's error subclasses them)."""

    def __init__(self, actor):
        self.actor = actor
        self.marks = _RemoteMarks(actor)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            return ray.get(self.actor.call.remote(name, args, kwargs))

        return call

    def apply(self, fn, *args: Any) -> Any:
        """`fn(store, *args)` on the actor, with the store itself (not this proxy): see on_store."""
        import ray

        return ray.get(self.actor.apply.remote(fn, args))

    @contextlib.contextmanager
    def frozen_collection(self, collection: str) -> Iterator[None]:
        """For engine.store.verify's read-back check: the host flushes and closes `collection` (the next call
        reopens it from disk) before the block runs; a context manager cannot travel to the actor itself."""
        import ray

        ray.get(self.actor.freeze.remote(collection))
        yield

    def close(self) -> None:
        """The driver's `with open_store(...)` ends: the actor closes the store (its lock is released)."""
        import ray

        ray.get(self.actor.close.remote())

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def on_store(store: Any, fn, *args: Any) -> Any:
    """`fn(store, *args)` where the store is: on its StoreHost actor for a RemoteStore, else here."""
    return store.apply(fn, *args) if isinstance(store, RemoteStore) else fn(store, *args)


class _RemoteMarks:
    def __init__(self, actor):
        self.actor = actor

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(store, *args: Any) -> Any:  # `store` is the proxy: the actor applies it to its own
            import ray

            return ray.get(self.actor.apply.remote(getattr(marks, name), args))

        return call
