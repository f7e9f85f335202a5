"""The quality benchmark's training: one token per (seed, concept, method), in a pool of spawned processes."""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .protocol import OURS, TRAINED, Protocol, QualityConfig, log


@dataclass(frozen=True)
class Task:
    seed: int
    product_id: str
    method: str
    lambda_ce: float | None = None  # None: TrainConfig's default


@dataclass
class Run:
    task: Task
    token: Any  # engine.tokens.CustomToken
    metrics: dict[str, Any]


def plan(qc: QualityConfig, protocol: Protocol) -> list[Task]:
    from trainer.config import TrainConfig

    tasks = [Task(s, pid, m) for s in qc.seeds for pid in protocol.concepts for m in TRAINED]
    tasks += [Task(qc.seeds[0], pid, OURS, lam) for lam in qc.lambda_ce if lam != TrainConfig.lambda_ce
              for pid in protocol.concepts[:qc.ablation_concepts]]
    return tasks


def train_config(qc: QualityConfig, task: Task):
    from trainer.config import TrainConfig

    extra = {} if task.lambda_ce is None else {"lambda_ce": task.lambda_ce}
    return TrainConfig(method=task.method, steps=qc.steps, seed=task.seed, samples=False, checkpoint_every=0, **extra)


def cache_path(qc: QualityConfig, task: Task, backbone_key: str) -> Path:
    """The file of `task`'s token in the cache `qc.cache`, keyed by backbone weights (`backbone_key`), world seed,
    product and training config: another backbone, world or config never shares a file."""
    from trainer.config import fingerprint

    key = fingerprint({"backbone": backbone_key, "world_seed": qc.world_seed, "product": task.product_id,
                       "config": train_config(qc, task).result_fields()})
    return Path(qc.cache) / f"world{qc.world_seed}-{task.product_id}-{task.method}-{key}.safetensors"


_WORKER: dict[str, Any] = {"concepts": {}}  # per process: the loaded backbone and the world concepts built so far


def _init_worker(backbone_id: str, threads: int) -> None:
    import torch

    from engine.loading import load_backbone

    torch.set_num_threads(threads)
    _WORKER["backbone"] = load_backbone(backbone_id, device="cpu")


def _train(qc: QualityConfig, task: Task, backbone_key: str) -> Run:
    from engine.tokens import load_token, save_token
    from trainer.ablation import train_world_token
    from trainer.world_concept import world_concept

    config = train_config(qc, task)
    path = None
    if qc.cache is not None:
        path = cache_path(qc, task, backbone_key)
        if path.is_file():
            token = load_token(path)
            return Run(task, token, dict(token.meta.metrics, cached=True))
    concept_key = (qc.world_seed, task.product_id)
    if concept_key not in _WORKER["concepts"]:
        _WORKER["concepts"][concept_key] = world_concept(task.product_id, seed=qc.world_seed)
    with tempfile.TemporaryDirectory(prefix="coinage-quality-") as tmp:
        result = train_world_token(_WORKER["backbone"], _WORKER["concepts"][concept_key], config, Path(tmp))
    if path is not None:
        save_token(result.token, path)  # its metadata carries the metrics (AUCs, norms, seconds)
    return Run(task, result.token, result.metrics)


def backbone_key(backbone) -> str:
    """Content hash of the backbone's weights (the cache must not serve tokens of a retrained backbone)."""
    from engine.onnx.export import weights_hash

    parts = [weights_hash(m) for m in (backbone.clip, backbone.unet, backbone.vae) if m is not None]
    return f"{backbone.id}:" + ":".join(h[:16] for h in parts)


@contextmanager
def workers(qc: QualityConfig, backbone) -> Iterator[Any]:
    """A pool of `qc.jobs` spawned processes that each load the backbone once, or None to work in-process."""
    _WORKER["backbone"] = backbone
    if qc.jobs == 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(qc.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(qc.backbone, qc.threads)) as pool:
        yield pool


def run_jobs(pool, fn: Callable, jobs: Sequence[tuple], done: Callable[[Any], None]) -> None:
    """fn(*job) for every job, in the pool (completion order) or in-process (job order); `done` sees each result."""
    if pool is None:
        for job in jobs:
            done(fn(*job))
        return
    from concurrent.futures import as_completed

    for future in as_completed([pool.submit(fn, *job) for job in jobs]):
        done(future.result())


def train_all(qc: QualityConfig, tasks: Sequence[Task], pool, key: str) -> dict[Task, Run]:
    """Every task's token and metrics, in task order."""
    runs: dict[Task, Run] = {}
    t0 = time.perf_counter()

    def done(run: Run) -> None:
        runs[run.task] = run
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(runs) * (len(tasks) - len(runs))
        t = run.task
        how = "loaded from the cache" if run.metrics.get("cached") else "trained"
        log(f"{how} {len(runs)}/{len(tasks)}: seed {t.seed} {t.product_id} {t.method}"
            f"{'' if t.lambda_ce is None else f' lambda_ce={t.lambda_ce:g}'} in {run.metrics['train_seconds']:.1f} s "
            f"(elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min)")

    run_jobs(pool, _train, [(qc, task, key) for task in tasks], done)
    return {task: runs[task] for task in tasks}
