"""`coinage serve`, `coinage worker` and `coinage demo` (settings from COINAGE_* variables, see docs/web.md)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from engine.store import StoreUnavailable
from web.jobs.health_file import health_path
from web.resources import Resources
from web.settings import AppSettings

from .demo import run_demo
from .devserver import serve

log = logging.getLogger(__name__)


def register(sub) -> list[str]:
    serve = sub.add_parser("serve", help="serve the web app (dev server), or print the gunicorn command",
                           description="Serve search, admin and the JSON API. In dev mode the job worker runs as a "
                                       "thread inside the server; --gunicorn prints the production command instead.")
    _net(serve)
    serve.add_argument("--gunicorn", action="store_true",
                       help="print the gunicorn command for production (and the worker command) and exit")
    serve.add_argument("--workers", type=int, default=2, help="gunicorn worker processes for --gunicorn (default 2)")
    _settings_args(serve)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run the job worker (training, reindex, previews) in this process",
                            description="Runs queued jobs until stopped (Ctrl-C / SIGTERM); interrupted jobs are "
                                        "queued again on start. Production runs it beside gunicorn.")
    _settings_args(worker)
    worker.set_defaults(func=_worker)

    demo = sub.add_parser("demo", help="build the demo catalog, index it and serve search with previews (offline)",
                          description="On a fresh machine: write the demo world's catalog if missing, index it "
                                      "with the demo backbone if the index is missing, then serve at the URL printed.")
    _net(demo)
    demo.add_argument("--no-serve", dest="serve", action="store_false", help="prepare catalog and index, then exit")
    demo.add_argument("--products", type=int, default=320, help="demo catalog products (default 320)")
    demo.add_argument("--photos", type=int, default=8, help="photos per product (default 8, at least 6)")
    demo.add_argument("--heldout", type=int, default=None, help="held-out products (default: the world's)")
    _settings_args(demo)
    demo.set_defaults(func=_demo)
    return ["serve", "worker", "demo"]


def _net(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="everything the app writes (default $COINAGE_DATA_DIR or var)")
    p.add_argument("--backbone", help="backbone (default $COINAGE_BACKBONE or world)")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", default=None,
                   help="PyTorch instead of ONNX Runtime for the text encoder and indexing")


def settings_from_args(args: argparse.Namespace):
    """AppSettings from COINAGE_* variables, with the command-line options in their place."""
    env = dict(os.environ)
    if getattr(args, "data_dir", None) is not None:
        env["COINAGE_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "backbone", None):
        env["COINAGE_BACKBONE"] = args.backbone
    if getattr(args, "onnx", None) is False:
        env["COINAGE_ONNX"] = "0"
    return AppSettings.from_env(env)


# ---------------------------------------------------------------------------- serve

def _serve(args) -> int:
    settings = settings_from_args(args)
    if args.gunicorn:
        print(gunicorn_command(settings, args.host, args.port, args.workers))
        return 0

    return serve(settings, args.host, args.port)


def gunicorn_command(settings, host: str, port: int, workers: int) -> str:
    lines = ["# production: the web app in gunicorn, the job worker as its own process (both read COINAGE_*)",
             "export COINAGE_ENV=production COINAGE_WORKER=process   # also COINAGE_SECRET_KEY, "
             "COINAGE_ADMIN_PASSWORD_HASH",
             f"gunicorn --workers {workers} --threads 4 --bind {host}:{port} --timeout 120 'web.wsgi:app'",
             "coinage worker"]
    if settings.store.backend == "embedded":
        lines.insert(1, "# note: the embedded store opens in one process only; with several gunicorn workers and a "
                        "separate worker, use a Qdrant server (COINAGE_STORE_BACKEND=server COINAGE_QDRANT_URL=...)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- worker

def _worker(args) -> int:
    settings = settings_from_args(args)
    try:
        resources = Resources(settings, with_diffusion=True)  # the worker generates previews and trains
    except Exception as e:
        if isinstance(e, StoreUnavailable) and settings.store.backend == "embedded":
            print(f"error: {e}\nThe embedded store opens in one process only: run the worker inside the web "
                  "process (COINAGE_WORKER=thread, `coinage serve`), or use a Qdrant server "
                  "(COINAGE_STORE_BACKEND=server, COINAGE_QDRANT_URL).", file=sys.stderr)
            return 1
        raise
    worker = resources.make_worker()

    def stop(_signum, _frame):
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    lanes = [list(lane) for lane in worker.lanes]
    print(f"coinage worker {worker.id}: lanes {lanes}, jobs in {resources.jobs.location}", flush=True)
    health_file = health_path(settings.data_dir)  # read by deploy/healthcheck.py worker
    print(f"coinage worker {worker.id}: lane health in {health_file}", flush=True)
    healthy = True
    try:
        healthy = worker.serve_forever(health_file=health_file)  # False: a lane died (logged); exit 1 to restart
    except KeyboardInterrupt:
        worker.stop()
    finally:
        resources.close()
    return 0 if healthy else 1


# ---------------------------------------------------------------------------- demo

def _demo(args) -> int:
    settings = settings_from_args(args)
    return run_demo(settings, products=args.products, photos=args.photos, heldout=args.heldout,
                    serve_after=args.serve, host=args.host, port=args.port)
