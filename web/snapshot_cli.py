"""`coinage snapshot create|list|restore|orphans`: back up and restore the vector collections, and find the
collections no alias points at (left by killed jobs; `orphans --drop NAME` frees their space).

The store comes from the same COINAGE_* variables as the web app and the worker
(COINAGE_STORE_BACKEND, COINAGE_QDRANT_URL, COINAGE_QDRANT_API_KEY, COINAGE_DATA_DIR, ...);
snapshots go to COINAGE_SNAPSHOT_DIR (default <data_dir>/snapshots). See docs/deploy.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def register(sub) -> list[str]:
    p = sub.add_parser("snapshot", help="back up and restore the vector collections (Qdrant snapshots)",
                       description="Snapshots of a collection: one file per Qdrant node (server backend) or a copy "
                                   "of the collection's files (embedded backend), with a manifest and checksums.")
    ssub = p.add_subparsers(dest="action", metavar="ACTION")
    ssub.required = True

    create = ssub.add_parser("create", help="snapshot a collection (or the one an alias points at) into a new folder")
    create.add_argument("--collection", type=_name, help="collection or alias (default $COINAGE_COLLECTION or products)")
    create.add_argument("--keep-on-nodes", action="store_true", default=None,
                        help="server: leave the snapshot files on the nodes too (default: delete them once downloaded)")
    _common(create)
    create.set_defaults(func=_create)

    ls = ssub.add_parser("list", help="snapshots in the snapshot folder (and, with --on-nodes, on the Qdrant nodes)")
    ls.add_argument("--on-nodes", action="store_true", help="server: also list the files each node still stores")
    ls.add_argument("--collection", type=_name,
                    help="with --on-nodes: collection or alias (default $COINAGE_COLLECTION or products)")
    _common(ls)
    ls.set_defaults(func=_list)

    restore = ssub.add_parser("restore", help="create a collection from a snapshot, check it, then switch the alias",
                              description="Creates the collection (default: the snapshot's name), checks that it "
                                          "holds as many points as the snapshot, then points the alias at it.")
    restore.add_argument("snapshot", help="snapshot folder, or its name under the snapshot folder")
    restore.add_argument("--collection", dest="target", type=_name, help="name of the restored collection "
                                                                         "(default: the snapshot's collection name)")
    which = restore.add_mutually_exclusive_group()
    which.add_argument("--alias", type=_name,
                       help="alias to point at the restored collection (default: the snapshot's alias)")
    which.add_argument("--no-alias", dest="alias", action="store_const", const="", help="switch no alias")
    _common(restore)
    restore.set_defaults(func=_restore)

    orphans = ssub.add_parser("orphans", help="collections no alias points at (left by killed reindexes or restores)",
                              description="Lists the collections that no alias points at, with their points; "
                                          "--drop NAME drops one (never one an alias points at, nor the collection "
                                          "named by --collection / $COINAGE_COLLECTION).")
    orphans.add_argument("--drop", action="append", default=[], type=_name, metavar="NAME",
                         help="drop this orphan collection (repeat for several)")
    orphans.add_argument("--collection", type=_name,
                         help="the live name, never an orphan (default $COINAGE_COLLECTION or products)")
    orphans.add_argument("--json", action="store_true", help="print the result as JSON")
    orphans.set_defaults(func=_orphans)
    return ["snapshot"]


def _name(value: str) -> str:
    """A collection or alias name from the command line, checked before anything runs (a usage error, exit 2)."""
    from engine.store.base import check_name

    try:
        return check_name("collection or alias", value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, help="snapshot folder (default $COINAGE_SNAPSHOT_DIR or <data_dir>/snapshots)")
    p.add_argument("--node", action="append", dest="nodes", metavar="URL",
                   help="server: REST URL of a Qdrant node, once per node in a fixed order "
                        "(default $COINAGE_QDRANT_NODES, else $COINAGE_QDRANT_URL)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _configs(args):
    from engine.store.snapshots import SnapshotConfig
    from web.settings import data_dir_from_env, store_config_from_env

    store = store_config_from_env()
    config = SnapshotConfig.from_env(store, data_dir_from_env(), dir=args.dir,
                                     nodes=tuple(args.nodes) if args.nodes else None,
                                     keep_on_nodes=getattr(args, "keep_on_nodes", None))
    return store, config


def _collection(args) -> str:
    return args.collection or os.environ.get("COINAGE_COLLECTION") or "products"


def _open(store_config):
    from engine.store import StoreUnavailable, open_store

    try:
        return open_store(store_config)
    except StoreUnavailable as e:
        if store_config.backend == "embedded":
            raise StoreUnavailable(f"{e}. Snapshots of the embedded store copy its files while no other process "
                                   "has them open: stop `coinage serve` / `coinage demo` first") from e
        raise


def _create(args) -> int:
    from engine.store.snapshots import create_snapshot

    store_config, config = _configs(args)
    with _open(store_config) as store:
        folder, manifest = create_snapshot(store, store_config, config, _collection(args))
    if args.json:
        print(json.dumps({"folder": str(folder), **manifest.to_json()}, indent=1))
    else:
        size = sum(f.size for f in manifest.files)
        print(f"snapshot of {manifest.collection!r} ({manifest.points} points, {len(manifest.files)} file(s), "
              f"{size / 2**20:.1f} MiB) in {folder}")
    return 0


def _list(args) -> int:
    from engine.store.snapshots import list_on_nodes, scan_snapshots

    store_config, config = _configs(args)
    found, damaged = scan_snapshots(config)
    on_nodes = None
    if args.on_nodes:
        if store_config.backend != "server":
            print("error: --on-nodes needs the server backend (COINAGE_STORE_BACKEND=server)", file=sys.stderr)
            return 2
        with _open(store_config) as store:
            name = _collection(args)
            on_nodes = list_on_nodes(store_config, config, store.get_alias(name) or name)
    if args.json:
        print(json.dumps({"dir": str(config.dir), "snapshots": [{"folder": str(p), **m.to_json()} for p, m in found],
                          "damaged": [{"folder": str(p), "error": why} for p, why in damaged],
                          **({"on_nodes": on_nodes} if on_nodes is not None else {})}, indent=1))
        return 0
    if not found:
        print(f"no {'readable ' if damaged else ''}snapshots in {config.dir}")
    for folder, m in found:
        alias = f" (alias {m.alias})" if m.alias else ""
        print(f"{folder.name}  {m.created}  {m.backend}  {m.collection}{alias}  {m.points} points  "
              f"{len(m.files)} file(s)")
    for url, snaps in (on_nodes or {}).items():
        print(f"on {url}: " + (", ".join(s["name"] for s in snaps) or "none"))
    for folder, why in damaged:
        print(f"damaged: {folder.name}: {why}", file=sys.stderr)
    return 0


def _restore(args) -> int:
    from engine.store.snapshots import restore_snapshot

    store_config, config = _configs(args)
    folder = Path(args.snapshot)
    if not folder.is_dir() and (config.dir / args.snapshot).is_dir():
        folder = config.dir / args.snapshot
    with _open(store_config) as store:
        report = restore_snapshot(store, store_config, config, folder, collection=args.target, alias=args.alias)
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        switched = (f"; alias {report.alias!r} -> {report.collection}" +
                    (f" (was {report.previous})" if report.previous else "")) if report.alias else ""
        print(f"restored {report.collection!r} ({report.points} points) from {report.folder}{switched}")
    return 0


def _orphans(args) -> int:
    from engine.store.orphans import drop_orphans, orphan_collections
    from web.settings import store_config_from_env

    live = [_collection(args)]
    with _open(store_config_from_env()) as store:
        dropped = drop_orphans(store, args.drop, live) if args.drop else []
        found = [(name, store.count(name)) for name in orphan_collections(store, live)]
    if args.json:
        print(json.dumps({"orphans": [{"collection": n, "points": p} for n, p in found], "dropped": dropped},
                         indent=1))
        return 0
    for name in dropped:
        print(f"dropped {name}")
    if not found:
        print("no orphan collections")
    for name, points in found:
        print(f"{name}  {points} points  (no alias points at it; drop with --drop {name})")
    return 0


if __name__ == "__main__":  # `python -m web.snapshot_cli snapshot ...`
    from coinage.cli import main

    sys.exit(main(sys.argv[1:]))
