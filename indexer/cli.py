"""`coinage index` (incremental ingest into the live collection) and `coinage reindex` (blue/green rebuild)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE


def register(sub) -> list[str]:
    from .config import IndexerConfig as C  # the defaults the help texts quote

    index = sub.add_parser("index", help="ingest a catalog into the live collection (incremental, resumable)",
                           description="Embed a catalog's images into the collection behind --collection; "
                                       "unchanged rows are skipped, a killed run resumes when run again.")
    _common(index)
    index.add_argument("--prune", action="store_true",
                       help="after a complete run, delete points whose id is no longer in the catalog")
    index.add_argument("--max-prune-fraction", type=float, default=C.max_prune_fraction,
                       help="refuse to prune more than this fraction of the collection in one run "
                            f"(default {C.max_prune_fraction})")
    index.add_argument("--force", action="store_true",
                       help="run even if the catalog yields no usable row, and prune past --max-prune-fraction")
    index.set_defaults(func=_index)
    reindex = sub.add_parser("reindex", help="rebuild the index in a new collection and switch the alias (blue/green)",
                             description="Build a new collection from the catalog, switch the alias to it "
                                         "atomically, then drop the old one. A failed job leaves the alias untouched.")
    _common(reindex)
    reindex.add_argument("--keep-old", action="store_true", help="keep the previous collection after the switch")
    reindex.add_argument("--max-reject-fraction", type=float, default=C.max_reject_fraction,
                         help="do not switch when more than this fraction of rows is rejected "
                              f"(default {C.max_reject_fraction})")
    reindex.set_defaults(func=_reindex)
    return ["index", "reindex"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", type=Path, required=True, help="catalog file: .csv, .jsonl or .parquet")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="backbone that embeds: registry name, local directory or hf-hub:org/repo "
                        f"(default {DEFAULT_BACKBONE})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--store-path", help="embedded store directory (default $COINAGE_STORE_PATH or var/store)")
    where.add_argument("--store-url", help="Qdrant server URL, e.g. http://qdrant:6333 (default $COINAGE_QDRANT_URL)")
    p.add_argument("--collection", "--alias", dest="alias", default="products",
                   help="alias searches use (default products)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder call (default 32)")
    p.add_argument("--decode-threads", type=int, default=2, help="decoder threads of the in-process path (default 2)")
    p.add_argument("--workers", type=int, default=0,
                   help="run on Ray Data with N workers per stage (the bulk path; needs `pip install 'coinage[ray]'`); "
                        "on the cluster at --ray-address / $COINAGE_RAY_ADDRESS, else on a local Ray "
                        "(default 0: in process)")
    p.add_argument("--ray-address", help="Ray cluster for --workers, e.g. ray://head:10001 "
                                         "(default $COINAGE_RAY_ADDRESS, else a local Ray)")
    p.add_argument("--allow-urls", action="store_true", help="fetch http(s) image URLs named in the catalog")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="with --allow-urls: also fetch from loopback/private/link-local addresses (your own network)")
    p.add_argument("--url-timeout", type=float, default=10.0, help="seconds a URL fetch may take in all (default 10)")
    p.add_argument("--image-root", type=Path, help="folder relative image paths resolve in (default: the catalog's)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="embed with ONNX Runtime (default) or PyTorch eager (--no-onnx)")
    p.add_argument("--quantize", choices=["int8", "fp16"],
                   help="reduced-precision ONNX encoder, used only if recall@10 vs fp32 >= --min-recall")
    p.add_argument("--min-recall", type=float, default=0.99, help="acceptance threshold for --quantize (default 0.99)")
    p.add_argument("--onnx-cache", type=Path, help="ONNX export cache (default $COINAGE_ONNX_CACHE or var/onnx)")
    p.add_argument("--threads", type=int, help="encoder threads (default: the runtime's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--rejects", type=Path, help="rejected rows file (JSONL; default var/indexer/rejects-*.jsonl)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def config_from_args(args: argparse.Namespace):
    from engine.store import StoreConfig

    from .config import IndexerConfig

    overrides = {}
    if args.store_url:
        overrides = {"backend": "server", "url": args.store_url}
    elif args.store_path:
        overrides = {"backend": "embedded", "path": args.store_path}
    return IndexerConfig(
        catalog=args.catalog, backbone=args.backbone, store=StoreConfig.from_env(**overrides), alias=args.alias,
        batch_size=args.batch_size, workers=args.decode_threads, ray_workers=args.workers,
        ray_address=args.ray_address, allow_urls=args.allow_urls, allow_private_urls=args.allow_private_urls,
        url_timeout_s=args.url_timeout, image_root=args.image_root, onnx=args.onnx, quantize=args.quantize,
        min_recall=args.min_recall, onnx_cache=args.onnx_cache, threads=args.threads, device=args.device,
        rejects_path=args.rejects, prune=getattr(args, "prune", False),
        max_reject_fraction=getattr(args, "max_reject_fraction", IndexerConfig.max_reject_fraction),
        keep_old=getattr(args, "keep_old", False), force=getattr(args, "force", False),
        max_prune_fraction=getattr(args, "max_prune_fraction", IndexerConfig.max_prune_fraction),
        progress_bar=args.progress,
    )


def _config(args):
    try:
        return config_from_args(args)
    except ValueError as e:
        from .errors import IndexerError

        raise IndexerError(f"invalid option: {e}") from e


def _index(args) -> int:
    from .pipeline import run_index

    report = run_index(_config(args))
    print(json.dumps(report.to_json(), indent=1) if args.json else report.summary())
    return 0


def _reindex(args) -> int:
    from .reindex import run_reindex

    report = run_reindex(_config(args))
    print(json.dumps(report.to_json(), indent=1) if args.json else report.summary())
    return 0 if report.switched else 1


if __name__ == "__main__":  # `python -m indexer.cli index ...`
    from coinage.cli import main

    sys.exit(main(sys.argv[1:]))
