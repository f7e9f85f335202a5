"""Custom tokens: the portable file format and an in-memory set of loaded tokens.

File contract (what the trainer writes and the engine, diffusers and other tools read):
a safetensors file holding exactly one tensor, `{placeholder: float32[num_vectors, width]}` —
the layout `StableDiffusionPipeline.load_textual_inversion` reads — with our metadata as JSON
under the safetensors header key `coinage` (parent word, attributes, backbone id, method,
projection basis id, metrics). Only safetensors is read: pickles are refused unopened.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import TokenError, UnknownTokenError
from .tokenizer import validate_placeholder

META_KEY = "coinage"
MAX_HEADER_BYTES = 1 << 20  # a token file's header is a few KiB; anything larger is refused before parsing
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ opcode, zip (torch.save)


@dataclass
class TokenMeta:
    parent: str  # the parent concept word, e.g. "dress"
    backbone_id: str  # the backbone whose embedding table the vectors live in
    attributes: list[str] = field(default_factory=list)  # attribute words A used for composition and projection
    method: str = "ti+ce+proj"  # training method (prompt-tuning, textual-inversion, ti+ce, ti+ce+proj)
    basis_id: str | None = None  # id of the projection basis (hash of attribute list + rank), None if unprojected
    metrics: dict[str, Any] = field(default_factory=dict)  # training diagnostics (AUCs, norms, timings)
    created_at: str | None = None  # ISO timestamp of training end

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TokenMeta":
        """Metadata from its JSON text; ValueError/TypeError name what is malformed."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        meta = cls(**{k: v for k, v in data.items() if k in known})
        for name, kinds in (("parent", str), ("backbone_id", str), ("method", str), ("metrics", dict),
                            ("basis_id", (str, type(None))), ("created_at", (str, type(None)))):
            if not isinstance(getattr(meta, name), kinds):
                raise ValueError(f"field {name!r} has the wrong type ({type(getattr(meta, name)).__name__})")
        if not (isinstance(meta.attributes, list) and all(isinstance(a, str) for a in meta.attributes)):
            raise ValueError("field 'attributes' must be a list of words")
        return meta


@dataclass
class CustomToken:
    placeholder: str  # '<aurora>'
    vectors: torch.Tensor  # (num_vectors, width) float32
    meta: TokenMeta

    def __post_init__(self) -> None:
        validate_placeholder(self.placeholder)
        if self.vectors.ndim != 2:
            raise TokenError(f"token {self.placeholder}: vectors must be 2-D (num_vectors, width), "
                             f"got shape {tuple(self.vectors.shape)}")
        if self.vectors.shape[0] < 1:
            raise TokenError(f"token {self.placeholder}: the file holds no vectors (shape {tuple(self.vectors.shape)})")
        if not bool(torch.isfinite(self.vectors).all()):
            raise TokenError(f"token {self.placeholder}: vectors contain NaN or inf; retrain the concept")

    @property
    def num_vectors(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def version(self) -> str:
        """Content hash: changes whenever the vectors or metadata change (cache keys use it)."""
        h = hashlib.sha256(self.vectors.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
        h.update(self.meta.to_json().encode())
        return h.hexdigest()[:12]


def save_token(token: CustomToken, path: str | Path) -> Path:
    """Write the token file atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({token.placeholder: token.vectors.detach().to("cpu", torch.float32).contiguous()}, str(tmp),
              metadata={META_KEY: token.meta.to_json()})
    os.replace(tmp, path)
    return path


def load_token(path: str | Path, backbone_id: str | None = None, width: int | None = None,
               parent: str | None = None) -> CustomToken:
    """Read a token file, checking format, shape, values and (when given) backbone id and width.

    A diffusers textual-inversion file without our metadata loads when `parent` is given.
    """
    path = Path(path)
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise TokenError(f"{path} is not a readable safetensors token file ({e}); re-export the token") from e
    if len(tensors) != 1:
        raise TokenError(f"{path} holds {len(tensors)} tensors {sorted(tensors)}; a token file holds exactly one, "
                         "named by its placeholder")
    placeholder, vectors = next(iter(tensors.items()))
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if META_KEY in metadata:
        try:
            meta = TokenMeta.from_json(metadata[META_KEY])
        except (ValueError, TypeError) as e:
            raise TokenError(f"{path}: its '{META_KEY}' metadata is malformed ({e}); re-export the token") from e
    elif parent is not None:
        meta = TokenMeta(parent=parent, backbone_id=backbone_id or "unknown", method="imported")
    else:
        raise TokenError(f"{path} has no Coinage metadata, so its parent word is unknown; import it with "
                         "an explicit parent word (`coinage concept import FILE --parent dress`)")
    token = CustomToken(placeholder, vectors.to(torch.float32), meta)
    if width is not None and token.width != width:
        raise TokenError(f"{path}: token width {token.width} does not match the backbone's text width {width}; "
                         "it was trained for another backbone — retrain it on this one")
    if backbone_id is not None and meta.backbone_id not in (backbone_id, "unknown"):
        raise TokenError(f"{path} was trained on backbone {meta.backbone_id!r}, not {backbone_id!r}; "
                         "retrain the concept on the active backbone")
    return token


def _check_safetensors_header(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise TokenError(f"cannot read token file {path}: {e}") from e
    if len(head) < 9:
        raise TokenError(f"{path} is too short to be a safetensors file ({len(head)} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    looks_safetensors = head[8:9] == b"{"
    if not looks_safetensors and head.startswith(_PICKLE_MAGIC):
        raise TokenError(f"{path} is a pickle/torch.save file; token files are loaded through safetensors only "
                         "(pickles can run code). Convert it with safetensors.torch.save_file on a trusted machine")
    if not looks_safetensors:
        raise TokenError(f"{path} is not a safetensors file (no JSON header); token files are .safetensors")
    if header_len > MAX_HEADER_BYTES:
        raise TokenError(f"{path}: safetensors header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte "
                         "limit for token files; the file is corrupt or not a token")


class TokenSet:
    """The custom tokens a text encoder knows, by placeholder."""

    def __init__(self, tokens: list[CustomToken] | None = None):
        self._tokens: dict[str, CustomToken] = {}
        for token in tokens or []:
            self.add(token)

    def add(self, token: CustomToken) -> None:
        self._tokens[token.placeholder] = token

    def remove(self, placeholder: str) -> None:
        self._tokens.pop(placeholder, None)

    def get(self, placeholder: str) -> CustomToken:
        if placeholder not in self._tokens:
            raise UnknownTokenError(placeholder, self.names())
        return self._tokens[placeholder]

    def names(self) -> list[str]:
        return sorted(self._tokens)

    def vectors(self) -> dict[str, torch.Tensor]:
        return {p: t.vectors for p, t in self._tokens.items()}

    def __contains__(self, placeholder: str) -> bool:
        return placeholder in self._tokens

    def __iter__(self) -> Iterator[CustomToken]:
        return iter(self._tokens.values())

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def from_mapping(cls, vectors: Mapping[str, torch.Tensor], meta: TokenMeta) -> "TokenSet":
        return cls([CustomToken(p, v, meta) for p, v in vectors.items()])
