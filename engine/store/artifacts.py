"""Files kept beside a collection (the spelling vocabulary): one versioned blob per (collection, name).

    write_artifact(store, "products-20261207-...", "spelling.json", data)
    artifact_version(store, collection, name)  # cheap: what a reader polls to know the blob changed
    read_artifact(store, collection, name)     # (version, data) or None

Collection metadata is not the place for them: qdrant-client downloads it with every `get_collection`, which the
server backend calls before every upsert batch. Artifacts are keyed by the concrete collection (not an alias), so a
reindex's alias switch makes the build collection's artifact live with it.

- embedded: the file `<store>/collections/<collection>/<name>`, replaced atomically; dropped with the collection.
  Version: the file's (inode, mtime, size), one `stat`.
- server (no disk shared by the web workers and the indexer): the collection ARTIFACTS in the same Qdrant, two
  points per artifact: a small one holding the version (a random id per write; polled) and one holding the blob
  (zlib + base64 in its payload, with the same version). A write removes the points of collections that no
  longer exist.
"""
from __future__ import annotations

import base64
import os
import uuid
import zlib
from pathlib import Path

import numpy as np

from engine.store.base import CollectionExists, CollectionNotFound, Point, StoreError, VectorStore, check_name, point_id

ARTIFACTS = "coinage-artifacts"  # server: the collection holding every collection's artifacts


def write_artifact(store: VectorStore, collection: str, name: str, data: bytes) -> str:
    """Store `data` as `collection`'s artifact `name` (replacing it); returns its new version."""
    check_name("artifact", name)
    directory = _directory(store, collection)
    if directory is not None:
        path = directory / name
        tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {path}: {e}; free disk space or fix the store directory's "
                             "permissions, then run the index again") from e
        return _file_version(path.stat())
    version = uuid.uuid4().hex
    _ensure_artifacts_collection(store)
    blob = base64.b64encode(zlib.compress(data, 6)).decode("ascii")
    store.upsert(ARTIFACTS, [
        Point(_data_id(collection, name), np.ones(1, np.float32), {"collection": collection, "name": name,
                                                                   "version": version, "data": blob}),
        Point(_version_id(collection, name), np.ones(1, np.float32), {"collection": collection, "name": name,
                                                                      "version": version}),
    ])
    _prune_server(store)
    return version


def artifact_version(store: VectorStore, collection: str, name: str) -> str | None:
    """The version of `collection`'s artifact `name`; None when there is none."""
    directory = _directory(store, collection)
    if directory is not None:
        try:
            return _file_version((directory / name).stat())
        except FileNotFoundError:
            return None
    found = _retrieve(store, _version_id(collection, name))
    return None if found is None else str(found.get("version"))


def read_artifact(store: VectorStore, collection: str, name: str) -> tuple[str, bytes] | None:
    """(version, data) of `collection`'s artifact `name`; None when there is none."""
    directory = _directory(store, collection)
    if directory is not None:
        path = directory / name
        try:
            with open(path, "rb") as f:
                return _file_version(os.fstat(f.fileno())), f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}; rebuild it with `coinage index --prune` or `coinage reindex`"
                             ) from e
    found = _retrieve(store, _data_id(collection, name))
    if found is None:
        return None
    try:
        return str(found["version"]), zlib.decompress(base64.b64decode(found["data"]))
    except (KeyError, ValueError, zlib.error) as e:
        raise StoreError(f"the artifact {name!r} of collection {collection!r} in {ARTIFACTS!r} is damaged ({e}); "
                         "rebuild it with `coinage index --prune` or `coinage reindex`") from e


def _directory(store: VectorStore, collection: str) -> Path | None:
    """embedded: the collection's directory; None for the server backend."""
    from engine.store.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        return None
    if not store.collection_exists(collection):
        raise CollectionNotFound(collection)
    return store.collection_dir(collection)


def _file_version(st: os.stat_result) -> str:
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


def _data_id(collection: str, name: str) -> str:
    return point_id(f"artifact:{collection}/{name}")


def _version_id(collection: str, name: str) -> str:
    return point_id(f"artifact-version:{collection}/{name}")


def _retrieve(store: VectorStore, pid: str) -> dict | None:
    try:
        found = store.retrieve(ARTIFACTS, [pid])
    except CollectionNotFound:
        return None
    return found[0].payload if found else None


def _ensure_artifacts_collection(store: VectorStore) -> None:
    if store.collection_exists(ARTIFACTS):
        return
    try:
        store.create_collection(ARTIFACTS, dim=1, sparse=False)
    except CollectionExists:
        pass  # another writer made it first: the collection is what we need


def _prune_server(store: VectorStore) -> None:
    """Drop the artifacts of collections that no longer exist (a reindex drops the old collection). Runs once per
    write (an index run), reading every artifact point once."""
    live = set(store.list_collections())
    stale = [p.id for p in store.retrieve(ARTIFACTS, store.scroll_ids(ARTIFACTS))
             if p.payload.get("collection") not in live]
    if stale:
        store.delete(ARTIFACTS, stale)
