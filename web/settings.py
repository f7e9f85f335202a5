"""The app-wide typed configuration: one dataclass per component, gathered in `AppSettings`.

    settings = AppSettings.from_env()                   # COINAGE_* variables (docs/web.md lists them all)
    settings = AppSettings(data_dir=tmp_path, backbone="tiny-random")   # tests: everything under tmp_path

Components reuse the configs their owners define (`StoreConfig`, `QueryConfig`, `TrainConfig`,
`ImageLimits`); this module adds what only the app has (admin, upload limits, the job worker) and
derives every path from `data_dir`, so one directory holds a whole installation:

    <data_dir>/store/          embedded vector store (unless COINAGE_STORE_PATH / a Qdrant server)
    <data_dir>/concepts/       concept registry (SQLite + images + token versions)
    <data_dir>/jobs.sqlite3    job store (web.jobs)
      (with COINAGE_DATABASE_URL the rows of both are in PostgreSQL; the concept files stay here)
    <data_dir>/previews/       preview PNGs and GAIR outcomes shared by web and worker processes
    <data_dir>/indexer/        rejected-row files of reindex jobs
    <data_dir>/onnx/           ONNX exports of the backbone's encoders (unless COINAGE_ONNX_CACHE)
    <data_dir>/uploads/        photos uploaded for search by photo
    <data_dir>/world/          the demo catalog (`coinage demo`)
    <data_dir>/admin.json      dev mode only: the hash of the generated admin password
    <data_dir>/secret_key      dev mode only: the generated session-signing key
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engine.backbones import DEFAULT_BACKBONE
from engine.database import DatabaseError, check_url, database_url_from_env
from engine.errors import CoinageError
from engine.image_files import SHAPE, ImageShape
from engine.merch.config import MerchSettings
from engine.query import floor
from engine.query.config import QueryConfig
from engine.store import StoreConfig

if TYPE_CHECKING:
    from trainer.config import TrainConfig

ENVIRONMENTS = ("dev", "production")
WORKER_MODES = ("thread", "process", "off")


class SettingsError(CoinageError):
    """A configuration value is missing or invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class AdminSettings:
    # Admin user name (COINAGE_ADMIN_USER).
    user: str = "admin"
    # werkzeug.security password hash (COINAGE_ADMIN_PASSWORD_HASH). None in dev: a random password is
    # generated at first start, stored hashed in <data_dir>/admin.json and printed once. Required in production.
    password_hash: str | None = field(default=None, repr=False)
    # Hours an admin session stays valid without activity.
    session_hours: float = 12.0
    # Hours an admin session lasts at most from its login, however active (web/admin_sessions.py).
    session_max_hours: float = 24.0

    def __post_init__(self) -> None:
        for name in ("session_hours", "session_max_hours"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"AdminSettings.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class LimitSettings:
    # Largest request body in bytes (all uploaded files together); larger requests get 413.
    max_request_bytes: int = 64 << 20
    # Largest single uploaded image file in bytes.
    max_image_bytes: int = 8 << 20
    # Largest uploaded image in pixels (width x height), checked from the header before decoding.
    max_image_pixels: int = 25_000_000
    # Smallest side of an uploaded image in pixels.
    min_image_side: int = 16
    # Longest side and aspect ratio of an uploaded image: the indexer's (engine.image_files.SHAPE), one limit set.
    shape: ImageShape = field(default=SHAPE)
    # Image formats accepted for uploads (PIL format names).
    image_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
    # Images per concept registration (the registry's own bounds are 3 to 50).
    min_concept_images: int = 3
    max_concept_images: int = 50
    # Preview jobs waiting at once; beyond it searches show results without a new preview.
    max_queued_previews: int = 32
    # Of those, preview jobs one client (address) may have waiting, so one client cannot fill the queue for all.
    max_queued_previews_per_client: int = 4
    # Seconds a failed preview is shown as failed to the same query before a new job may try again.
    failed_preview_reuse_s: float = 60.0
    # Longest a search waits for the job store to find or queue its preview; past it the page renders with the
    # results and no preview (the submit finishes in the background).
    preview_submit_timeout_s: float = 0.5
    # Results per page on the search page.
    results_per_page: int = 12

    def __post_init__(self) -> None:
        from engine.image_files import check_pixel_limit

        try:
            check_pixel_limit(self.max_image_pixels, "COINAGE_MAX_IMAGE_PIXELS")
        except ValueError as e:
            raise SettingsError(str(e)) from e


@dataclass(frozen=True)
class WorkerSettings:
    # 'thread': the job worker runs inside the web process (dev, demo); 'process': a separate
    # `coinage worker` process runs jobs (production); 'off': jobs wait until a worker runs them.
    mode: str = "thread"
    # Seconds between polls for a queued job when idle.
    poll_s: float = 0.5
    # Seconds between heartbeats (and cancel-flag checks) of a running job.
    heartbeat_s: float = 1.0
    # A running job whose heartbeat is older than this is taken as interrupted and queued again.
    stale_after_s: float = 30.0
    # Runs a job gets (first run + re-queues after interruptions) before it is marked failed.
    max_attempts: int = 3
    # Job kinds served by each worker thread ("lane"): previews never wait behind a training run.
    lanes: tuple[tuple[str, ...], ...] = (("preview",), ("train", "reindex"))

    def __post_init__(self) -> None:
        if self.mode not in WORKER_MODES:
            raise SettingsError(f"worker mode {self.mode!r} is not one of {WORKER_MODES}; set COINAGE_WORKER")
        for name in ("poll_s", "heartbeat_s", "stale_after_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"WorkerSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.stale_after_s <= 3 * self.heartbeat_s:
            raise SettingsError(f"WorkerSettings.stale_after_s ({self.stale_after_s}) must exceed three heartbeats "
                                f"({3 * self.heartbeat_s} s), or live jobs would be taken as interrupted")


@dataclass(frozen=True)
class RetentionSettings:
    # Seconds between pruning passes (run by the job worker's first lane).
    every_s: float = 600.0
    # Finished jobs (done, failed, cancelled) older than this are deleted, with their waiter rows
    # (COINAGE_KEEP_JOBS_DAYS).
    finished_jobs_s: float = 30 * 86400.0
    # Finished preview jobs older than this are deleted (they are cheap to run again).
    finished_previews_s: float = 86400.0
    # Preview PNGs and GAIR outcomes not written for this long are deleted (COINAGE_KEEP_PREVIEWS_DAYS); a search
    # whose preview files are gone queues its preview again.
    preview_files_s: float = 7 * 86400.0

    def __post_init__(self) -> None:
        for name in ("every_s", "finished_jobs_s", "finished_previews_s", "preview_files_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"RetentionSettings.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class RateLimitSettings:
    # Where the counts live, shared by the processes that use the same storage (COINAGE_RATELIMIT_STORAGE): a
    # `limits` storage URI. memory:// counts per process (one web process, the demo); with several gunicorn
    # workers or hosts use redis://HOST:6379 (also valkey://, memcached://, mongodb://).
    storage_uri: str = "memory://"
    # Searches per client address (a `limits` string, e.g. "120 per minute"; COINAGE_RATELIMIT_SEARCH); beyond: 429.
    search: str = "120 per minute"
    # New preview jobs per client address (COINAGE_RATELIMIT_PREVIEWS); beyond it results show without a preview.
    previews: str = "20 per minute"
    # Failed admin logins per client address; beyond: 429 until the window passes.
    login_failures: str = "10 per minute"

    def __post_init__(self) -> None:
        from limits import parse_many

        for name in ("search", "previews", "login_failures"):
            try:
                parse_many(getattr(self, name))
            except ValueError as e:
                raise SettingsError(f"rate limit {name}={getattr(self, name)!r} is not a limit like "
                                    f"'120 per minute' ({e})") from e


def _default_train() -> "TrainConfig":
    from trainer.config import TrainConfig

    return TrainConfig()


@dataclass
class AppSettings:
    # 'dev' (generated admin password and secret key, worker thread) or 'production' (COINAGE_ENV).
    env: str = "dev"
    # Root of everything the app writes (COINAGE_DATA_DIR); see the module docstring for the layout. A relative
    # path is made absolute against the working directory once, here (Flask's send_file would otherwise resolve
    # it against the web package).
    data_dir: Path = Path("var")
    # Backbone identifier: registry name, local directory or hf-hub:org/repo (COINAGE_BACKBONE).
    backbone: str = DEFAULT_BACKBONE
    # Torch device for the backbone: 'auto', 'cpu' or 'cuda' (COINAGE_DEVICE).
    device: str = "auto"
    # Catalog file that reindex jobs read, and whose folder catalog images are served from (COINAGE_CATALOG).
    # None: <data_dir>/world/catalog.jsonl (the demo catalog).
    catalog: Path | None = None
    # Key that signs session cookies (COINAGE_SECRET_KEY). None in dev: generated once into <data_dir>/secret_key.
    secret_key: str | None = field(default=None, repr=False)
    # Bearer token a Prometheus scraper sends to read /metrics (COINAGE_METRICS_TOKEN). None: admins only.
    metrics_token: str | None = field(default=None, repr=False)
    # PostgreSQL URL holding the job store's and the concept registry's rows (COINAGE_DATABASE_URL), e.g.
    # postgresql://coinage:PASSWORD@db:5432/coinage. None: SQLite files (jobs_db, <registry_root>/concepts/).
    database_url: str | None = field(default=None, repr=False)
    # Vector store; None: the embedded store under <data_dir>/store.
    store: StoreConfig | None = None
    # Query service; preview_dir None becomes <data_dir>/previews (shared by web and worker processes).
    query: QueryConfig = field(default_factory=QueryConfig)
    # Training defaults of concepts registered from the admin page (trainer.TrainConfig; steps: COINAGE_TRAIN_STEPS).
    train: "TrainConfig" = field(default_factory=_default_train)
    # Embed catalog images with ONNX Runtime in reindex jobs (COINAGE_ONNX=0 turns it off, also for text).
    onnx: bool = True
    # Torch CPU threads for this process; None: torch's default (COINAGE_THREADS).
    threads: int | None = None
    # Reverse proxies in front of the app that set X-Forwarded-For / X-Forwarded-Proto (COINAGE_PROXY_HOPS).
    # 0: the headers are ignored and the client address is the connection's (a client could forge them). N > 0:
    # werkzeug's ProxyFix trusts the last N values, so the login throttle counts per real client, not per proxy.
    proxy_hops: int = 0
    admin: AdminSettings = field(default_factory=AdminSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    # Synonyms, rules and search analytics (engine/merch/config.py).
    merch: MerchSettings = field(default_factory=MerchSettings)

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise SettingsError(f"COINAGE_ENV={self.env!r} is not one of {ENVIRONMENTS}")
        if self.proxy_hops < 0:
            raise SettingsError(f"COINAGE_PROXY_HOPS={self.proxy_hops} must be >= 0 (0: no proxy in front)")
        self.data_dir = absolute_path(self.data_dir)
        if self.database_url is not None:
            try:
                check_url(self.database_url)
            except DatabaseError as e:
                raise SettingsError(str(e)) from e
        if self.catalog is None:
            self.catalog = self.data_dir / "world" / "catalog.jsonl"
        self.catalog = absolute_path(self.catalog)
        if self.store is None:
            self.store = StoreConfig(path=str(self.data_dir / "store"))
        if self.query.preview_dir is None:
            self.query = replace(self.query, preview_dir=str(self.data_dir / "previews"))
        if self.query.onnx_cache_dir is None:
            self.query = replace(self.query, onnx_cache_dir=str(self.data_dir / "onnx"))
        if self.env == "production":
            self.check_production()

    # ------------------------------------------------------------------ derived paths

    @property
    def jobs_db(self) -> Path:
        """The job store's SQLite file (unused with database_url)."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def registry_root(self) -> Path:
        """engine.concepts.ConceptRegistry root (it keeps its files under <root>/concepts/)."""
        return self.data_dir

    @property
    def catalog_root(self) -> Path:
        """Folder catalog image paths are relative to (and the only folder catalog images are served from)."""
        return self.catalog.resolve().parent

    @property
    def indexer_dir(self) -> Path:
        return self.data_dir / "indexer"

    @property
    def onnx_cache(self) -> Path:
        return Path(self.query.onnx_cache_dir)

    @property
    def uploads_dir(self) -> Path:
        """Photos uploaded for search by photo (kept so result pages can be paged through)."""
        return self.data_dir / "uploads"

    def check_production(self) -> None:
        """Production refuses to start without real credentials and a worker outside the web process."""
        missing = []
        if not self.admin.password_hash:
            missing.append("COINAGE_ADMIN_PASSWORD_HASH (make one with: python -c \"from werkzeug.security import "
                           "generate_password_hash as g; print(g(input('password: ')))\")")
        if not self.secret_key:
            missing.append("COINAGE_SECRET_KEY (make one with: python -c \"import secrets; "
                           "print(secrets.token_hex(32))\")")
        if missing:
            raise SettingsError("production mode (COINAGE_ENV=production) needs " + " and ".join(missing)
                                + "; there is no default password")
        if self.secret_key is not None and len(self.secret_key) < 16:
            raise SettingsError("COINAGE_SECRET_KEY is shorter than 16 characters; use secrets.token_hex(32)")

    # ------------------------------------------------------------------ environment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "AppSettings":
        """Settings from COINAGE_* variables (`environ` defaults to os.environ); keyword overrides win."""
        env = os.environ if environ is None else environ
        mode = _choice(env, "COINAGE_ENV", ENVIRONMENTS, "dev")
        values: dict[str, Any] = {"env": mode, "data_dir": data_dir_from_env(env)}
        for key, var in (("backbone", "COINAGE_BACKBONE"), ("device", "COINAGE_DEVICE"),
                         ("catalog", "COINAGE_CATALOG"), ("secret_key", "COINAGE_SECRET_KEY"),
                         ("metrics_token", "COINAGE_METRICS_TOKEN")):
            if env.get(var):
                values[key] = env[var]
        values["database_url"] = database_url_from_env(env)
        values["threads"] = _number(env, "COINAGE_THREADS", int, None)
        values["proxy_hops"] = _number(env, "COINAGE_PROXY_HOPS", int, 0, minimum=0)
        values["onnx"] = _flag(env, "COINAGE_ONNX", True)
        values["store"] = store_config_from_env(env)
        query: dict[str, Any] = {"text_runtime": "auto" if values["onnx"] else "torch"}
        if env.get("COINAGE_COLLECTION"):
            query["collection"] = env["COINAGE_COLLECTION"]
        if env.get("COINAGE_ONNX_CACHE"):
            query["onnx_cache_dir"] = env["COINAGE_ONNX_CACHE"]
        steps = _number(env, "COINAGE_PREVIEW_STEPS", int, None)
        if steps is not None:
            query["steps"] = steps
        query["gair_ranks"] = _flag(env, "COINAGE_GAIR_RANKS", QueryConfig.gair_ranks)
        photos = _number(env, "COINAGE_CONCEPT_PHOTO_WEIGHT", float, None, minimum=0)
        if photos is not None:
            query["concept_photo_weight"] = photos
        if env.get("COINAGE_SORT_FLOOR"):
            try:
                floor.parse_rule(env["COINAGE_SORT_FLOOR"])
            except ValueError as e:
                raise SettingsError(f"COINAGE_SORT_FLOOR: {e}") from e
            query["sort_floor"] = env["COINAGE_SORT_FLOOR"]
        values["query"] = QueryConfig(**query)
        train = _default_train()
        train_steps = _number(env, "COINAGE_TRAIN_STEPS", int, None)
        values["train"] = replace(train, steps=train_steps) if train_steps else train
        values["admin"] = AdminSettings(user=env.get("COINAGE_ADMIN_USER") or "admin",
                                        password_hash=env.get("COINAGE_ADMIN_PASSWORD_HASH") or None)
        limits = LimitSettings()
        values["limits"] = replace(
            limits,
            max_request_bytes=int(_number(env, "COINAGE_MAX_UPLOAD_MB", float, limits.max_request_bytes / 2**20) * 2**20),
            max_image_bytes=int(_number(env, "COINAGE_MAX_IMAGE_MB", float, limits.max_image_bytes / 2**20) * 2**20),
            max_image_pixels=_number(env, "COINAGE_MAX_IMAGE_PIXELS", int, limits.max_image_pixels))
        rates = RateLimitSettings()
        values["ratelimit"] = RateLimitSettings(
            storage_uri=env.get("COINAGE_RATELIMIT_STORAGE") or rates.storage_uri,
            search=env.get("COINAGE_RATELIMIT_SEARCH") or rates.search,
            previews=env.get("COINAGE_RATELIMIT_PREVIEWS") or rates.previews)
        keep = RetentionSettings()
        values["retention"] = replace(
            keep, finished_jobs_s=_number(env, "COINAGE_KEEP_JOBS_DAYS", float, keep.finished_jobs_s / 86400) * 86400,
            preview_files_s=_number(env, "COINAGE_KEEP_PREVIEWS_DAYS", float, keep.preview_files_s / 86400) * 86400)
        values["worker"] = WorkerSettings(
            mode=_choice(env, "COINAGE_WORKER", WORKER_MODES, "process" if mode == "production" else "thread"))
        values["merch"] = MerchSettings(
            analytics=_flag(env, "COINAGE_ANALYTICS", True),
            retention_days=_number(env, "COINAGE_ANALYTICS_RETENTION_DAYS", float, MerchSettings.retention_days))
        values.update(overrides)
        return cls(**values)


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """COINAGE_DATA_DIR, or var, as an absolute path (relative to the working directory)."""
    env = os.environ if env is None else env
    return absolute_path(env.get("COINAGE_DATA_DIR") or "var")


def absolute_path(path: str | os.PathLike) -> Path:
    """`path` made absolute against the working directory and normalised, without resolving symlinks."""
    return Path(os.path.abspath(path))


def store_config_from_env(env: Mapping[str, str] | None = None) -> StoreConfig:
    """The vector store the app uses: StoreConfig.from_env, with the embedded store under
    <data_dir>/store unless COINAGE_STORE_PATH says otherwise. Commands that only need the store
    (`coinage snapshot`) use this rather than AppSettings, which also checks the web app's secrets."""
    env = os.environ if env is None else env
    try:
        store = StoreConfig.from_env(env)
    except ValueError as e:
        raise SettingsError(f"vector store settings: {e}") from e
    if not env.get("COINAGE_STORE_PATH"):
        store = replace(store, path=str(data_dir_from_env(env) / "store"))
    return store


def _choice(env: Mapping[str, str], var: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(var) or default
    if value not in choices:
        raise SettingsError(f"{var}={value!r} is not one of {', '.join(choices)}")
    return value


def _number(env: Mapping[str, str], var: str, kind: Callable, default: Any, minimum: float | None = None) -> Any:
    """`var` as a `kind` number; it must be > 0, or >= `minimum` when given."""
    raw = env.get(var)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as e:
        raise SettingsError(f"{var}={raw!r} is not a{'n integer' if kind is int else ' number'}") from e
    if value <= 0 if minimum is None else value < minimum:
        raise SettingsError(f"{var}={raw!r} must be {'> 0' if minimum is None else f'>= {minimum}'}")
    return value


def _flag(env: Mapping[str, str], var: str, default: bool) -> bool:
    raw = (env.get(var) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{var}={raw!r} must be 1/0 (or true/false)")
