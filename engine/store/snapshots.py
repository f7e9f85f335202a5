"""Snapshots of vector collections, and restoring them: `coinage snapshot create|list|restore`.

One snapshot is one folder under SnapshotConfig.dir:

    <collection>-<YYYYmmdd-HHMMSS-mmm>/manifest.json   what it holds (Manifest); written last, so
                                                       a folder without it is an unfinished snapshot
    .../node-<i>.snapshot                              server: Qdrant's snapshot from node i (its shards)
    .../collection.tar.gz                              embedded: the collection's directory

- server (a Qdrant server or cluster): every node snapshots its own shards, the files are
  downloaded (and then deleted on the nodes unless keep_on_nodes), and a restore uploads file i
  to node i of a deployment with as many nodes (engine/store/qdrant_snapshots.py).
- embedded: the collection's files are copied while its shard is closed and the store directory
  locked (no other process can have the store open), then restored under a name of this store.
- both: what the collection serves with beside its points is saved as files too (`artifacts` in the
  manifest): the spelling vocabulary (spelling.json, engine/vocabulary.py; also that of an old collection
  which kept it in its metadata), restored beside the new collection before the alias moves to it.

A restore creates a new collection (by default the snapshot's own name), checks that it holds
as many points as the snapshot, and only then points the alias at it (atomically), so searches
move from the old collection to the restored one in one step, as a reindex does.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from engine.store.base import CollectionNotFound, StoreConfig, StoreError, VectorStore, check_name

FORMAT = 1
MANIFEST = "manifest.json"
EMBEDDED_FILE = "collection.tar.gz"


@dataclass(frozen=True)
class SnapshotConfig:
    # Folder holding one sub-folder per snapshot (COINAGE_SNAPSHOT_DIR; default <data_dir>/snapshots).
    # Keep a copy off the machines that run the store.
    dir: Path = Path("var/snapshots")
    # server: REST URL of every Qdrant node, in a fixed order (COINAGE_QDRANT_NODES, comma-separated;
    # default: the store's URL alone). Backup file i comes from, and is restored to, node i.
    nodes: tuple[str, ...] = ()
    # server: seconds one node may take to create, send or receive its snapshot.
    transfer_timeout_s: float = 3600.0
    # server: leave each node's snapshot file on the node after downloading it (default: delete it,
    # nodes keep snapshots forever otherwise).
    keep_on_nodes: bool = False

    @classmethod
    def from_env(cls, store: StoreConfig, data_dir: Path, environ: Mapping[str, str] | None = None,
                 **overrides: Any) -> SnapshotConfig:
        env = os.environ if environ is None else environ
        nodes = tuple(u.strip() for u in (env.get("COINAGE_QDRANT_NODES") or "").split(",") if u.strip())
        values: dict[str, Any] = {
            "dir": Path(env.get("COINAGE_SNAPSHOT_DIR") or Path(data_dir) / "snapshots"),
            "nodes": nodes or ((store.url,) if store.url else ()),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class SnapshotFile:
    file: str  # file name inside the snapshot folder
    sha256: str
    size: int
    node: str | None = None  # server: the node URL it came from
    qdrant_name: str | None = None  # server: the snapshot's name on that node


@dataclass
class Manifest:
    backend: str  # "embedded" or "server": restores go to the same kind of store
    collection: str  # the collection saved
    alias: str | None  # the alias the snapshot was taken through (restore re-points it by default)
    points: int  # points in the collection when saved (checked after a restore)
    created: str  # UTC, ISO 8601
    files: list[SnapshotFile] = field(default_factory=list)
    server_version: str | None = None  # server: Qdrant's version (restore needs the same minor)
    format: int = FORMAT
    # files restored beside the collection (the spelling vocabulary); absent in snapshots made before
    artifacts: list[SnapshotFile] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text())
            files = [SnapshotFile(**f) for f in data.pop("files")]
            artifacts = [SnapshotFile(**f) for f in data.pop("artifacts", [])]
            manifest = cls(files=files, artifacts=artifacts, **data)
        except FileNotFoundError as e:
            raise StoreError(f"{folder} is not a snapshot (no {MANIFEST}); give a folder listed by "
                             "`coinage snapshot list`") from e
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise StoreError(f"cannot read {path}: {e}; the snapshot is damaged or from another tool") from e
        if manifest.format != FORMAT:
            raise StoreError(f"{path} has format {manifest.format}; this version reads format {FORMAT}")
        return manifest


@dataclass
class RestoreReport:
    folder: str
    collection: str  # the collection created
    points: int
    alias: str | None  # the alias now pointing at `collection`, if any
    previous: str | None  # the collection the alias pointed at before


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=1))
    os.replace(tmp, folder / MANIFEST)


# --- create ---------------------------------------------------------------------------------


def create_snapshot(store: VectorStore, store_config: StoreConfig, config: SnapshotConfig,
                    name: str) -> tuple[Path, Manifest]:
    """Snapshot the collection `name` (or the one the alias `name` points at) into a new folder
    under config.dir; returns the folder and its manifest."""
    target = store.get_alias(name) or name
    if not store.collection_exists(target):
        raise CollectionNotFound(name)
    alias = name if target != name else None
    now = _now()
    folder = Path(config.dir) / f"{target}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
    if folder.exists():
        raise StoreError(f"{folder} exists already; run it again")
    folder.mkdir(parents=True)
    manifest = Manifest(backend=store_config.backend, collection=target, alias=alias, points=store.count(target),
                        created=now.isoformat(timespec="seconds"))
    try:
        if store_config.backend == "embedded":
            manifest.files = [_embedded_create(store, target, folder)]
        else:
            manifest.server_version, manifest.files = _server_create(store_config, config, target, folder)
        manifest.artifacts = _artifacts_create(store, target, folder)
        _write_manifest(folder, manifest)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, manifest


def _artifacts_create(store: VectorStore, collection: str, folder: Path) -> list[SnapshotFile]:
    from engine.vocabulary import ARTIFACT, read_vocabulary

    vocabulary = read_vocabulary(store, collection)[1]
    if vocabulary is None:
        return []
    path = folder / ARTIFACT
    path.write_text(json.dumps(vocabulary.to_json()))
    return [SnapshotFile(file=ARTIFACT, sha256=_sha256(path), size=path.stat().st_size)]


def _artifacts_restore(store: VectorStore, folder: Path, manifest: Manifest, target: str) -> None:
    from engine.vocabulary import ARTIFACT, Vocabulary, write_vocabulary

    for f in manifest.artifacts:
        if f.file != ARTIFACT:
            raise StoreError(f"{folder} lists the artifact {f.file!r}, which this version does not know; restore it "
                             "with the version that made the snapshot")
        try:
            vocabulary = Vocabulary.from_json(json.loads((folder / f.file).read_text()))
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read {folder / f.file}: {e}; the snapshot is damaged") from e
        if vocabulary is None:
            raise StoreError(f"{folder / f.file} is not a spelling vocabulary; the snapshot is damaged")
        write_vocabulary(store, target, vocabulary)


def _embedded_create(store: VectorStore, collection: str, folder: Path) -> SnapshotFile:
    from engine.store.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        raise StoreError(f"the embedded snapshot needs an EmbeddedStore, got {type(store).__name__}")
    path = folder / EMBEDDED_FILE
    # gzip (fast level): the engine preallocates its files (sparse, mostly zeros), which tar stores in full
    with store.frozen_collection(collection) as directory, tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for part in ("meta.json", "shard"):
            tar.add(directory / part, arcname=part)
    return SnapshotFile(file=EMBEDDED_FILE, sha256=_sha256(path), size=path.stat().st_size)


def _nodes(store_config: StoreConfig, config: SnapshotConfig):
    from engine.store.qdrant_snapshots import QdrantNodes

    if store_config.in_process_location() is not None:
        raise StoreError(f"qdrant-client's in-memory mode and local mode (url={store_config.url!r}, test stand-ins) "
                         "have no snapshots; snapshot a Qdrant server (COINAGE_QDRANT_URL=http://...)")
    return QdrantNodes(config.nodes or (store_config.url,), store_config.api_key, config.transfer_timeout_s)


def _server_create(store_config: StoreConfig, config: SnapshotConfig, collection: str,
                   folder: Path) -> tuple[str, list[SnapshotFile]]:
    nodes = _nodes(store_config, config)
    try:
        nodes.check_all_listed()
        version = nodes.version()
        files = []
        for i, url in enumerate(nodes.urls):
            described = nodes.create(i, collection)
            name = str(described["name"])
            local = f"node-{i}.snapshot"
            sha256, size = nodes.download(i, collection, name, folder / local)
            if described.get("checksum") and described["checksum"] != sha256:
                raise StoreError(f"snapshot {name} from {url} arrived damaged (sha256 {sha256}, the node says "
                                 f"{described['checksum']}); run `coinage snapshot create` again")
            if not config.keep_on_nodes:
                nodes.delete(i, collection, name)
            files.append(SnapshotFile(file=local, sha256=sha256, size=size, node=url, qdrant_name=name))
        return version, files
    finally:
        nodes.close()


# --- list -----------------------------------------------------------------------------------


def list_snapshots(config: SnapshotConfig) -> list[tuple[Path, Manifest]]:
    """Finished snapshots under config.dir, oldest first (unfinished and damaged folders are left out)."""
    return scan_snapshots(config)[0]


def scan_snapshots(config: SnapshotConfig) -> tuple[list[tuple[Path, Manifest]], list[tuple[Path, str]]]:
    """(finished snapshots oldest first, [(folder, why it cannot be read)]): one damaged manifest does not hide
    the others."""
    root = Path(config.dir)
    if not root.is_dir():
        return [], []
    found, damaged = [], []
    for folder in sorted(root.iterdir()):
        if (folder / MANIFEST).is_file():
            try:
                found.append((folder, Manifest.read(folder)))
            except StoreError as e:
                damaged.append((folder, str(e)))
    return sorted(found, key=lambda item: (item[1].created, item[0].name)), damaged


def list_on_nodes(store_config: StoreConfig, config: SnapshotConfig, collection: str) -> dict[str, list[dict]]:
    """server: node URL -> the snapshots of `collection` still stored on that node."""
    nodes = _nodes(store_config, config)
    try:
        return {url: nodes.list(i, collection) for i, url in enumerate(nodes.urls)}
    finally:
        nodes.close()


# --- restore --------------------------------------------------------------------------------


def restore_snapshot(store: VectorStore, store_config: StoreConfig, config: SnapshotConfig, folder: Path,
                     collection: str | None = None, alias: str | None = None) -> RestoreReport:
    """Create `collection` (default: the snapshot's collection name) from the snapshot in `folder`,
    check its point count, then point `alias` (default: the snapshot's alias; "" for none) at it."""
    folder = Path(folder)
    manifest = Manifest.read(folder)
    if manifest.backend != store_config.backend:
        raise StoreError(f"{folder} is a snapshot of an {manifest.backend} store, but the store configured is "
                         f"{store_config.backend}; to move between backends rebuild the index with `coinage reindex`")
    target = _checked_name("collection", collection or manifest.collection, "--collection")
    alias = manifest.alias if alias is None else (alias or None)
    if store.collection_exists(target) or store.get_alias(target) is not None:
        raise StoreError(f"collection or alias {target!r} exists already; restore under a new name with "
                         f"--collection (e.g. {manifest.collection}-restored) and let --alias switch searches to it")
    if alias is not None:  # checked before anything is restored: a refusal afterwards left an orphan collection
        _checked_name("alias", alias, "--alias")
        if store.collection_exists(alias) or alias == target:
            raise StoreError(f"--alias {alias!r} names a collection, not an alias; pick another alias, or pass "
                             "--no-alias and switch searches by hand")
    for f in [*manifest.files, *manifest.artifacts]:
        if _sha256(folder / f.file) != f.sha256:
            raise StoreError(f"{folder / f.file} does not match its sha256 in {MANIFEST}; the copy is damaged, "
                             "take it from another backup")
    if manifest.backend == "embedded":
        _embedded_restore(store, folder / manifest.files[0].file, target)
    else:
        _server_restore(store_config, config, manifest, folder, target)
    points = store.count(target)
    if points != manifest.points:
        raise StoreError(f"restored collection {target!r} holds {points} points but the snapshot had "
                         f"{manifest.points}; the alias was not switched. Check the nodes' logs, drop {target!r} "
                         "and restore again")
    _artifacts_restore(store, folder, manifest, target)
    previous = store.get_alias(alias) if alias else None
    if alias:
        try:
            store.set_alias(alias, target)
        except Exception:
            store.drop_collection(target)  # no orphan: the restore is undone, the alias untouched
            raise
    return RestoreReport(folder=str(folder), collection=target, points=points, alias=alias, previous=previous)


def _checked_name(kind: str, name: str, option: str) -> str:
    try:
        return check_name(kind, name)
    except ValueError as e:
        raise StoreError(f"{e} (the {option} option); nothing was restored") from e


def _embedded_restore(store: VectorStore, archive: Path, target: str) -> None:
    from engine.store.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        raise StoreError(f"the embedded restore needs an EmbeddedStore, got {type(store).__name__}")

    def fill(directory: Path) -> None:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # in order: a gzip stream reads forwards
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise StoreError(f"{archive} holds {member.name!r}, which a collection archive never does; "
                                     "refusing to extract it")
                dest = directory.joinpath(*parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise StoreError(f"cannot read {member.name!r} from {archive}; the archive is damaged")
                _write_sparse(source, dest, member.size)

    store.adopt_collection(target, fill)


def _write_sparse(source, dest: Path, size: int) -> None:
    """Copy leaving runs of zeros as holes, as the engine's preallocated files were."""
    zeros = bytes(1 << 20)
    with open(dest, "wb") as f:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            if chunk == zeros[:len(chunk)]:
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                f.write(chunk)
        f.truncate(size)


def _server_restore(store_config: StoreConfig, config: SnapshotConfig, manifest: Manifest, folder: Path,
                    target: str) -> None:
    nodes = _nodes(store_config, config)
    try:
        if len(nodes.urls) != len(manifest.files):
            raise StoreError(
                f"the snapshot in {folder} has one file per node of a {len(manifest.files)}-node deployment, but "
                f"{len(nodes.urls)} node URL(s) are configured; restore into a deployment of "
                f"{len(manifest.files)} nodes and list them all in COINAGE_QDRANT_NODES (or --node)"
            )
        nodes.check_all_listed()
        version = nodes.version()
        if manifest.server_version and _minor(version) != _minor(manifest.server_version):
            raise StoreError(f"the snapshot comes from Qdrant {manifest.server_version}, the nodes run {version}; "
                             "Qdrant restores snapshots only within one minor version: restore into a "
                             f"{_minor(manifest.server_version)}.x deployment, or rebuild with `coinage reindex`")
        for i, f in enumerate(manifest.files):
            nodes.upload(i, target, folder / f.file, f.sha256)
    finally:
        nodes.close()


def _minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])
