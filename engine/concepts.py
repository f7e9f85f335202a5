"""The concept registry: registered concepts, their trained token versions and which one is live.

Rows in SQLite (`root/concepts/registry.sqlite3`, WAL journal), or in PostgreSQL tables when given
a URL (COINAGE_DATABASE_URL), one short connection per call (engine/database.py), so the web app,
the training worker and the CLI share one registry across processes (and, with PostgreSQL and a
shared `root`, across hosts). Files always live under `root/concepts/<name>/`:

    images/                       the concept's example photos (PNG, as registered)
    versions/<version>/           one training run (or import)
        token.safetensors         the token file (engine.tokens contract)
        features.safetensors      {"features": float32[n, embed_dim]}: CLIP features of the images
        diagnostics.json          losses, norms, similarities, AUCs
        samples.png               generations with the token
        work/                     checkpoints while training (removed when the version is ready)

The live token of a concept is its `active_version`; it changes only through `activate` and
`deactivate`, each a single UPDATE, so a training run that fails or is cancelled never touches
what search serves. Version files are written before the version is recorded as ready and are
never rewritten afterwards.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from safetensors.torch import load_file, save_file

from .database import Connection, is_unique_violation, open_database
from .errors import CoinageError, ImageError, TokenError
from .image_files import pil_error, pil_open_errors
from .preprocess import open_upright
from .text_checks import name_problem
from .tokenizer import validate_placeholder
from .tokens import CustomToken, TokenSet, load_token, save_token

log = logging.getLogger(__name__)

ImageSource = Union[bytes, str, Path]
DB_NAME = "registry.sqlite3"
TOKEN_FILE = "token.safetensors"
FEATURES_FILE = "features.safetensors"
DIAGNOSTICS_FILE = "diagnostics.json"
SAMPLES_FILE = "samples.png"
WORK_DIR = "work"
MIN_IMAGES, MAX_IMAGES = 3, 50
CONCEPT_STATUSES = ("registered", "training", "ready", "failed", "cancelled")
VERSION_PATTERN = re.compile(r"v\d{4,9}", re.ASCII)  # start_version names them v0001, v0002, ...
VERSION_STATUSES = ("training", "ready", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS concepts (
    name TEXT PRIMARY KEY,
    placeholder TEXT NOT NULL UNIQUE,
    parent TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '[]',
    method TEXT NOT NULL,
    num_vectors INTEGER NOT NULL,
    status TEXT NOT NULL,
    active_version TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL REFERENCES concepts(name) ON DELETE CASCADE,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    backbone_id TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    PRIMARY KEY (name, version)
);
"""


class ConceptError(CoinageError):
    """A registry problem: unknown concept or version, bad images, a version that is not ready."""


class ConceptNotFound(ConceptError):
    """No such concept, version or live version (the web answers 404)."""


class ConceptExists(ConceptError):
    """The placeholder is already registered, also when another process registered it a moment ago (409)."""


class VersionNotReady(ConceptError):
    """The version exists but its training has not finished (409)."""


@dataclass
class Concept:
    name: str  # directory name: the placeholder without its brackets
    placeholder: str  # '<aurora>'
    parent: str  # parent concept word, e.g. 'dress'
    attributes: list[str]  # attribute words (empty: chosen automatically at training time)
    method: str  # training method requested at registration
    num_vectors: int  # token rows requested at registration
    status: str  # registered / training / ready / failed / cancelled (of the latest training run)
    active_version: str | None  # the live token's version; None: not served
    created: str  # ISO timestamps (UTC)
    updated: str
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics of the active version
    error: str | None = None  # message of the last failed run


@dataclass
class Version:
    name: str
    version: str  # 'v0001', 'v0002', ... in creation order
    status: str  # training / ready / failed / cancelled
    method: str
    backbone_id: str | None
    created: str
    updated: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def concept_name(placeholder: str) -> str:
    """'<aurora>' -> 'aurora' (placeholders are validated, so the name is a safe directory name)."""
    return validate_placeholder(placeholder)[1:-1]


def default_root() -> Path:
    """Where the CLI keeps its registry: $COINAGE_HOME, else ./var."""
    return Path(os.environ.get("COINAGE_HOME", "var"))


def as_registry(registry: "ConceptRegistry | str | Path") -> "ConceptRegistry":
    """`registry` itself, or the SQLite registry under the root it names (TrainRequest.registry takes either)."""
    return registry if isinstance(registry, ConceptRegistry) else ConceptRegistry(registry)


class ConceptRegistry:
    """Concepts, versions and the active token of each: files under `root`, rows in SQLite under `root`
    or, with `database_url`, in PostgreSQL (see the module docstring)."""

    def __init__(self, root: str | Path, database_url: str | None = None):
        self.root = Path(root)
        self.concepts_dir = self.root / "concepts"
        self.concepts_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.concepts_dir / DB_NAME  # the SQLite file; unused with database_url
        self.db = open_database(self.db_path, database_url, scope="registry", foreign_keys=True)
        self.db.create_schema(_SCHEMA)

    # ------------------------------------------------------------------ plumbing

    def _connect(self):
        return self.db.connect()

    def _write(self):
        """A write transaction, serialised with the registry's other writers: read-then-write sequences are atomic."""
        return self.db.write()

    def concept_dir(self, placeholder: str) -> Path:
        return self.concepts_dir / concept_name(placeholder)

    def version_dir(self, placeholder: str, version: str) -> Path:
        check_version(version)
        return self.concept_dir(placeholder) / "versions" / version

    def work_dir(self, placeholder: str, version: str) -> Path:
        """Checkpoints of a version's training run."""
        return self.version_dir(placeholder, version) / WORK_DIR

    # ------------------------------------------------------------------ concepts

    def register(self, placeholder: str, parent: str, images: Sequence[ImageSource],
                 attributes: Sequence[str] | None = None, method: str = "ti+ce+proj",
                 num_vectors: int = 4) -> Concept:
        """Add a concept with its example images (bytes or file paths, 3 to 50, any format PIL reads).

        The images are checked and stored as PNG under images/; the concept starts as 'registered'.
        """
        name = concept_name(placeholder)
        if not parent or not parent.strip():
            raise ConceptError("parent must be a word naming the concept's category, e.g. 'dress'")
        check_words(parent, attributes)
        if not MIN_IMAGES <= len(images) <= MAX_IMAGES:
            raise ConceptError(f"a concept needs {MIN_IMAGES} to {MAX_IMAGES} example images, got {len(images)}")
        if num_vectors < 1:
            raise ConceptError(f"num_vectors must be >= 1, got {num_vectors}")
        pngs = [_to_png(image, i) for i, image in enumerate(images)]
        now = _now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM concepts WHERE name=?", (name,)).fetchone():
                raise self._exists(placeholder)
            try:  # the row first: the loser of a race (a unique violation) must not touch the winner's files
                conn.execute(
                    "INSERT INTO concepts (name, placeholder, parent, attributes, method, num_vectors, status, "
                    "active_version, created, updated, metrics, error) VALUES (?,?,?,?,?,?,?,NULL,?,?,'{}',NULL)",
                    (name, placeholder, parent.strip(), json.dumps(list(attributes or [])), method,
                     int(num_vectors), "registered", now, now))
            except Exception as e:
                if is_unique_violation(e):
                    raise self._exists(placeholder) from e
                raise
            folder = self.concept_dir(placeholder) / "images"
            if folder.parent.exists():  # leftovers of a concept deleted while its files were open
                shutil.rmtree(folder.parent)
            folder.mkdir(parents=True)
            for i, data in enumerate(pngs):
                (folder / f"{i:03d}.png").write_bytes(data)
        return self.get(placeholder)

    def list(self) -> list[Concept]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM concepts ORDER BY name").fetchall()
        return [_concept(r) for r in rows]

    def get(self, placeholder: str) -> Concept:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM concepts WHERE name=?", (concept_name(placeholder),)).fetchone()
        if row is None:
            raise self._unknown(placeholder)
        return _concept(row)

    def __contains__(self, placeholder: str) -> bool:
        try:
            self.get(placeholder)
        except ConceptError:
            return False
        return True

    def images(self, placeholder: str) -> list[Path]:
        """The stored example images, in registration order."""
        self.get(placeholder)
        return sorted((self.concept_dir(placeholder) / "images").glob("*.png"))

    def thumbnail(self, placeholder: str, size: int) -> Path | None:
        """A PNG of the first example image fitted in size x size, made once and kept beside the images
        (`thumb-<size>.png`; remade when the image is newer), so serving it decodes no full photo. None when the
        concept has no images."""
        images = self.images(placeholder)
        if not images:
            return None
        path = self.concept_dir(placeholder) / f"thumb-{int(size)}.png"
        try:
            if path.stat().st_mtime_ns >= images[0].stat().st_mtime_ns:
                return path
        except FileNotFoundError:
            pass
        from PIL import Image

        with Image.open(images[0]) as im:
            im.draft("RGB", (size, size))  # JPEG decodes at a fraction of full size; a no-op for other formats
            thumb = im.convert("RGB")
        thumb.thumbnail((size, size))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        thumb.save(tmp, format="PNG")
        os.replace(tmp, path)  # atomic: a concurrent request sees the old file or the whole new one
        return path

    def update(self, placeholder: str, *, parent: str | None = None, attributes: Sequence[str] | None = None,
               method: str | None = None, num_vectors: int | None = None) -> Concept:
        """Change registration fields (they apply to the next training run)."""
        current = self.get(placeholder)
        words = list(attributes if attributes is not None else current.attributes)
        check_words(parent or current.parent, words)
        with self._write() as conn:
            conn.execute(
                "UPDATE concepts SET parent=?, attributes=?, method=?, num_vectors=?, updated=? WHERE name=?",
                (parent or current.parent, json.dumps(words), method or current.method,
                 int(num_vectors or current.num_vectors), _now(), current.name))
        return self.get(placeholder)

    def delete(self, placeholder: str) -> None:
        """Remove the concept, its versions and its files (its token stops being served at once)."""
        name = concept_name(placeholder)
        with self._write() as conn:
            if conn.execute("DELETE FROM concepts WHERE name=?", (name,)).rowcount == 0:
                raise self._unknown(placeholder)
        shutil.rmtree(self.concept_dir(placeholder), ignore_errors=True)

    # ------------------------------------------------------------------ versions

    def start_version(self, placeholder: str, method: str, backbone_id: str | None) -> str:
        """Allocate the next version id (status 'training') and create its directory."""
        name = concept_name(placeholder)
        now = _now()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM concepts WHERE name=?", (name,)).fetchone() is None:
                raise self._unknown(placeholder)
            last = conn.execute("SELECT MAX(CAST(SUBSTR(version, 2) AS INTEGER)) AS last FROM versions WHERE name=?",
                                (name,)).fetchone()["last"]
            version = f"v{(last or 0) + 1:04d}"
            conn.execute("INSERT INTO versions (name, version, status, method, backbone_id, created, updated) "
                         "VALUES (?,?,?,?,?,?,?)", (name, version, "training", method, backbone_id, now, now))
            conn.execute("UPDATE concepts SET status='training', error=NULL, updated=? WHERE name=?", (now, name))
        self.work_dir(placeholder, version).mkdir(parents=True, exist_ok=True)
        return version

    def resume_version(self, placeholder: str, version: str) -> None:
        """Mark an unfinished version as training again (a resumed run)."""
        v = self.version(placeholder, version)
        if v.status == "ready":
            raise ConceptError(f"{placeholder} version {version} is already trained; start a new version instead")
        now = _now()
        with self._write() as conn:
            conn.execute("UPDATE versions SET status='training', error=NULL, updated=? WHERE name=? AND version=?",
                         (now, v.name, version))
            conn.execute("UPDATE concepts SET status='training', error=NULL, updated=? WHERE name=?", (now, v.name))

    def unfinished_versions(self, placeholder: str) -> list[Version]:
        """Versions whose training did not finish (killed, cancelled or failed), newest first."""
        return [v for v in reversed(self.versions(placeholder)) if v.status != "ready"]

    def record_version(self, placeholder: str, version: str, metrics: dict[str, Any] | None = None) -> Version:
        """Mark a version ready once its files are written. Does not change the live token (see activate)."""
        name = concept_name(placeholder)
        for required in (TOKEN_FILE, FEATURES_FILE):
            if not (self.version_dir(placeholder, version) / required).is_file():
                raise ConceptError(f"{placeholder} version {version} has no {required}; write it before recording")
        now = _now()
        with self._write() as conn:
            cur = conn.execute("UPDATE versions SET status='ready', metrics=?, error=NULL, updated=? "
                               "WHERE name=? AND version=?", (json.dumps(metrics or {}), now, name, version))
            if cur.rowcount == 0:
                raise self._unknown(placeholder, version)
            conn.execute("UPDATE concepts SET status='ready', error=NULL, updated=? WHERE name=?", (now, name))
        return self.version(placeholder, version)

    def fail_version(self, placeholder: str, version: str, error: str, cancelled: bool = False) -> None:
        """Record that a run stopped (failed or cancelled); the active version is left as it was."""
        name = concept_name(placeholder)
        status = "cancelled" if cancelled else "failed"
        now = _now()
        with self._write() as conn:
            conn.execute("UPDATE versions SET status=?, error=?, updated=? WHERE name=? AND version=?",
                         (status, error, now, name, version))
            conn.execute("UPDATE concepts SET status=?, error=?, updated=? WHERE name=?", (status, error, now, name))

    def versions(self, placeholder: str) -> list[Version]:
        name = concept_name(placeholder)
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM versions WHERE name=? ORDER BY version", (name,)).fetchall()
        return [_version(r) for r in rows]

    def version(self, placeholder: str, version: str) -> Version:
        check_version(version)
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM versions WHERE name=? AND version=?",
                               (concept_name(placeholder), version)).fetchone()
        if row is None:
            raise self._unknown(placeholder, version)
        return _version(row)

    def import_token(self, path: str | Path, parent: str, placeholder: str | None = None,
                     backbone_id: str | None = None, width: int | None = None, activate: bool = True) -> Version:
        """Add a token file (ours or a diffusers textual-inversion file) as a new ready version.

        The concept is registered without images when it is new. Imported tokens have no image
        features, so GAIR's image term is unavailable for them until they are retrained.
        """
        token = load_token(path, backbone_id=backbone_id, width=width, parent=parent)
        if placeholder is not None and placeholder != token.placeholder:
            token = CustomToken(validate_placeholder(placeholder), token.vectors, token.meta)
        token.meta.parent = parent
        if token.placeholder not in self:
            now = _now()
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO concepts (name, placeholder, parent, attributes, method, num_vectors, status, "
                    "active_version, created, updated, metrics, error) VALUES (?,?,?,?,?,?,'registered',NULL,?,?,"
                    "'{}',NULL)", (concept_name(token.placeholder), token.placeholder, parent,
                                   json.dumps(token.meta.attributes), token.meta.method, token.num_vectors, now, now))
            (self.concept_dir(token.placeholder) / "images").mkdir(parents=True, exist_ok=True)
        version = self.start_version(token.placeholder, token.meta.method, token.meta.backbone_id)
        folder = self.version_dir(token.placeholder, version)
        save_token(token, folder / TOKEN_FILE)
        _save_features(folder / FEATURES_FILE, torch.zeros(0, 0))
        shutil.rmtree(folder / WORK_DIR, ignore_errors=True)
        self.record_version(token.placeholder, version, {"imported_from": Path(path).name, **token.meta.metrics})
        if activate:
            self.activate(token.placeholder, version)
        return self.version(token.placeholder, version)

    # ------------------------------------------------------------------ the live token

    def activate(self, placeholder: str, version: str) -> Concept:
        """Make `version` the live token: one UPDATE, applied only if the version is ready."""
        name = concept_name(placeholder)
        check_version(version)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE concepts SET active_version=?, updated=?, "
                "metrics=(SELECT metrics FROM versions WHERE name=? AND version=?) "
                "WHERE name=? AND EXISTS (SELECT 1 FROM versions WHERE name=? AND version=? AND status='ready')",
                (version, _now(), name, version, name, name, version))
            if cur.rowcount == 0:
                raise self._not_activatable(conn, placeholder, version)
        return self.get(placeholder)

    def deactivate(self, placeholder: str) -> Concept:
        """Stop serving the concept's token (its versions stay; activate one again to serve it)."""
        with self._write() as conn:
            cur = conn.execute("UPDATE concepts SET active_version=NULL, updated=? WHERE name=?",
                               (_now(), concept_name(placeholder)))
            if cur.rowcount == 0:
                raise self._unknown(placeholder)
        return self.get(placeholder)

    def token_path(self, placeholder: str, version: str | None = None) -> Path:
        """The token file of `version` (default: the active one), e.g. for download or export."""
        if version is None:
            version = self.get(placeholder).active_version
            if version is None:
                raise ConceptNotFound(f"{placeholder} has no active version; activate one "
                                   f"(`coinage concept activate {placeholder} VERSION`) or name the version")
        path = self.version_dir(placeholder, version) / TOKEN_FILE
        if not path.is_file():
            status = self.version(placeholder, version).status  # an unknown version: ConceptNotFound
            raise VersionNotReady(f"{placeholder} version {version} is {status} and has no token file; only a "
                                  "finished training run has one")
        return path

    def active_tokens(self, backbone_id: str, width: int, strict: bool = False) -> TokenSet:
        """Every active token, loaded and checked against the backbone id and text width.

        A token that fails the checks (trained on another backbone, unreadable) is left out with a
        warning naming the reason, so one bad concept does not stop search; `strict` raises instead.
        """
        tokens = TokenSet()
        for concept in self.list():
            if concept.active_version is None:
                continue
            try:
                token = load_token(self.token_path(concept.placeholder, concept.active_version),
                                   backbone_id=backbone_id, width=width)
            except (TokenError, ConceptError) as e:
                if strict:
                    raise
                log.warning("not serving %s (version %s): %s", concept.placeholder, concept.active_version, e)
                continue
            if token.placeholder != concept.placeholder:
                token = CustomToken(concept.placeholder, token.vectors, token.meta)
            tokens.add(token)
        return tokens

    def features(self, placeholder: str, version: str | None = None) -> torch.Tensor:
        """CLIP image features (n, embed_dim) of the concept's training images (for GAIR)."""
        path = self.token_path(placeholder, version).with_name(FEATURES_FILE)
        if not path.is_file():
            raise ConceptError(f"{placeholder}: no {FEATURES_FILE} next to {path.with_name(TOKEN_FILE)}")
        feats = load_file(str(path))["features"]
        if feats.numel() == 0:
            raise ConceptError(f"{placeholder} was imported without images, so it has no image features; "
                               "retrain it from images to use GAIR's image term and rank with the concept's photos")
        return feats

    # ------------------------------------------------------------------ errors

    def _unknown(self, placeholder: str, version: str | None = None) -> ConceptNotFound:
        if version is not None:
            known = [v.version for v in self.versions(placeholder)] if placeholder in self else []
            return ConceptNotFound(f"{placeholder} has no version {version!r}; versions: {', '.join(known) or 'none'}")
        names = [c.placeholder for c in self.list()]
        return ConceptNotFound(f"no concept {placeholder!r} is registered; registered: {', '.join(names) or 'none'}. "
                               "Register it first (admin page or `coinage concept train`)")

    @staticmethod
    def _exists(placeholder: str) -> ConceptExists:
        return ConceptExists(f"concept {placeholder} is already registered; pick another placeholder, or delete the "
                             f"existing concept first (admin page or `coinage concept delete {placeholder}`)")

    def _not_activatable(self, conn: Connection, placeholder: str, version: str) -> ConceptError:
        name = concept_name(placeholder)
        if conn.execute("SELECT 1 FROM concepts WHERE name=?", (name,)).fetchone() is None:
            return self._unknown(placeholder)
        row = conn.execute("SELECT status FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
        if row is None:
            return self._unknown(placeholder, version)
        return VersionNotReady(f"{placeholder} version {version} is {row['status']}, not ready; only a finished "
                               "training run can be activated")


def check_version(version: object) -> None:
    """ConceptError unless `version` is a version id (VERSION_PATTERN): no paths, no text SQL cannot store."""
    if not (isinstance(version, str) and VERSION_PATTERN.fullmatch(version)):
        raise ConceptError(f"malformed version {version!r:.60}; versions look like 'v0001'")


def check_words(parent: str, attributes: Sequence[str] | None) -> None:
    """ConceptError when the parent or an attribute word is not printable text (engine.text_checks.name_problem:
    stored and shown on the admin pages as given). trainer.words checks the rest of a concept's words."""
    for field, word in [("parent", parent)] + [("attribute", a) for a in attributes or ()]:
        problem = name_problem(word) if isinstance(word, str) else f"a {type(word).__name__}, not text"
        if problem:
            raise ConceptError(f"{field} word {word!r:.40} holds {problem}")


def save_features(path: str | Path, features: torch.Tensor) -> Path:
    """Write the features sidecar {"features": float32[n, embed_dim]} atomically."""
    return _save_features(Path(path), features)


def _save_features(path: Path, features: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"features": features.detach().to("cpu", torch.float32).contiguous()}, str(tmp))
    os.replace(tmp, path)
    return path


def _to_png(image: ImageSource, index: int) -> bytes:
    """The photo as it is shown (engine.preprocess.upright_rgb), stored as PNG."""
    label = str(image) if isinstance(image, (str, Path)) else f"image #{index}"
    if not isinstance(image, (str, Path, bytes, bytearray)):
        raise ConceptError(f"{label}: give image bytes or a file path, not {type(image).__name__}")
    try:
        rgb = open_upright(image)
    except pil_open_errors() as e:
        raise ConceptError(f"{label} is not an image Coinage can read ({pil_error(e)}); upload PNG, JPEG or WebP "
                           "files") from e
    except ImageError as e:
        raise ConceptError(f"{label}: {e}") from e
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()


def _concept(row: Any) -> Concept:
    return Concept(name=row["name"], placeholder=row["placeholder"], parent=row["parent"],
                   attributes=json.loads(row["attributes"]), method=row["method"], num_vectors=row["num_vectors"],
                   status=row["status"], active_version=row["active_version"], created=row["created"],
                   updated=row["updated"], metrics=json.loads(row["metrics"] or "{}"), error=row["error"])


def _version(row: Any) -> Version:
    return Version(name=row["name"], version=row["version"], status=row["status"], method=row["method"],
                   backbone_id=row["backbone_id"], created=row["created"], updated=row["updated"],
                   metrics=json.loads(row["metrics"] or "{}"), error=row["error"])
