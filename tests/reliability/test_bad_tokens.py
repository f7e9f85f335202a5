"""Hostile token files through every door a token comes in by: `load_token`, the registry's import (what
`coinage concept import` and the admin use) and the CLI. Each is refused with a TokenError naming the
problem; the registry is unchanged and the live token of another concept keeps serving, bit for bit.
A pickle whose unpickling would run code is refused unopened: the code never runs."""
from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from engine.concepts import ConceptRegistry
from engine.errors import TokenError
from engine.tokens import CustomToken, TokenMeta, load_token, save_token

WIDTH = 32  # tiny-random's text width
BACKBONE = "tiny-random"


class _RunsCode:
    """Unpickling this creates the file `marker` (a stand-in for any code an attacker would run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _meta(**over) -> dict[str, str]:
    meta = {"parent": "dress", "backbone_id": BACKBONE, **over}
    return {"coinage": json.dumps(meta)}


def _st(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=_meta() if metadata is None else metadata)


def _write(kind: str, path) -> str:
    """Write a bad token file of `kind` at `path`; returns a fragment the error message must contain."""
    row = torch.randn(1, WIDTH)
    if kind == "pickle-runs-code":
        path.write_bytes(pickle.dumps({"<evil>": _RunsCode(path.parent / "pwned")}, protocol=2))
        return "pickle"
    if kind == "pickle-protocol-0":
        path.write_bytes(pickle.dumps({"<evil>": [1.0]}, protocol=0))
        return "not a safetensors file"
    if kind == "torch-save-zip":
        torch.save({"<evil>": row}, path)
        return "pickle"
    if kind == "wrong-width":
        _st(path, {"<wide>": torch.randn(2, 48)})
        return "width 48 does not match"
    if kind in ("nan", "+inf", "-inf"):
        bad = row.clone()
        bad[0, 3] = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}[kind]
        _st(path, {"<bad>": bad})
        return "NaN or inf"
    if kind == "wrong-backbone":
        _st(path, {"<other>": row}, _meta(backbone_id="sd15"))
        return "trained on backbone 'sd15'"
    if kind == "oversized-header":
        _st(path, {"<big>": row}, {**_meta(), "padding": "x" * (2 << 20)})
        return "header of"
    if kind == "header-longer-than-file":
        path.write_bytes(struct.pack("<Q", 4096) + b'{"<a>": {"dtype": "F32"')
        return "not a readable safetensors"
    if kind == "truncated-data":
        _st(path, {"<cut>": torch.randn(4, WIDTH)})
        path.write_bytes(path.read_bytes()[:-64])
        return "not a readable safetensors"
    if kind == "metadata-not-an-object":
        _st(path, {"<m>": row}, {"coinage": "[1, 2]"})
        return "metadata is malformed"
    if kind == "metadata-wrong-types":
        _st(path, {"<m>": row}, {"coinage": json.dumps({"parent": 5, "backbone_id": BACKBONE})})
        return "field 'parent'"
    if kind == "metadata-not-json":
        _st(path, {"<m>": row}, {"coinage": "{parent: dress"})
        return "metadata is malformed"
    if kind == "no-vectors":
        _st(path, {"<empty>": torch.zeros(0, WIDTH)})
        return "holds no vectors"
    if kind == "three-dims":
        _st(path, {"<cube>": torch.zeros(2, 2, WIDTH)})
        return "must be 2-D"
    if kind == "two-tensors":
        _st(path, {"<a>": row, "<b>": row.clone()})
        return "exactly one"
    if kind == "bad-placeholder":
        _st(path, {"<../../etc>": row})
        return "malformed placeholder"
    if kind == "empty-file":
        path.write_bytes(b"")
        return "too short"
    if kind == "garbage":
        path.write_bytes(os.urandom(512).replace(b"{", b"}"))
        return "safetensors"
    raise AssertionError(kind)


KINDS = ["pickle-runs-code", "pickle-protocol-0", "torch-save-zip", "wrong-width", "nan", "+inf", "-inf",
         "wrong-backbone", "oversized-header", "header-longer-than-file", "truncated-data", "metadata-not-an-object",
         "metadata-wrong-types", "metadata-not-json", "no-vectors", "three-dims", "two-tensors", "bad-placeholder",
         "empty-file", "garbage"]


@pytest.fixture
def live(tmp_path):
    """A registry with one live imported token, <aurora>, and its exact vectors."""
    root = tmp_path / "registry"
    registry = ConceptRegistry(root)
    vectors = torch.randn(2, WIDTH)
    good = save_token(CustomToken("<aurora>", vectors, TokenMeta("dress", BACKBONE)), tmp_path / "good.safetensors")
    registry.import_token(good, parent="dress", backbone_id=BACKBONE, width=WIDTH)
    return root, vectors


def _state(root) -> tuple:
    registry = ConceptRegistry(root)
    concepts = [(c.placeholder, c.active_version, c.status) for c in registry.list()]
    versions = [(v.version, v.status) for c in registry.list() for v in registry.versions(c.placeholder)]
    return concepts, versions


@pytest.mark.parametrize("kind", KINDS)
def test_bad_token_files_are_refused_everywhere_and_change_nothing(kind, tmp_path, live, capsys):
    from coinage.cli import main

    root, vectors = live
    path = tmp_path / "token.safetensors"
    marker = tmp_path / "pwned"
    needle = _write(kind, path)
    before = _state(root)

    with pytest.raises(TokenError) as direct:
        load_token(path, backbone_id=BACKBONE, width=WIDTH, parent="dress")
    assert needle in str(direct.value), str(direct.value)
    with pytest.raises(TokenError):
        ConceptRegistry(root).import_token(path, parent="dress", backbone_id=BACKBONE, width=WIDTH)
    assert main(["concept", "import", str(path), "--parent", "dress", "--root", str(root), "--backbone", BACKBONE,
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err

    assert not marker.exists(), "unpickling ran code"
    assert _state(root) == before
    live_tokens = ConceptRegistry(root).active_tokens(BACKBONE, WIDTH, strict=True)
    assert live_tokens.names() == ["<aurora>"] and torch.equal(live_tokens.get("<aurora>").vectors, vectors)


def test_a_token_file_damaged_on_disk_takes_only_its_concept_offline(tmp_path, live):
    """Bit rot or tampering in the active version's file: that token is left out with a warning, others serve."""
    root, vectors = live
    registry = ConceptRegistry(root)
    other = save_token(CustomToken("<borealis>", torch.randn(1, WIDTH), TokenMeta("coat", BACKBONE)),
                       tmp_path / "other.safetensors")
    registry.import_token(other, parent="coat", backbone_id=BACKBONE, width=WIDTH)
    for kind in ("pickle-runs-code", "metadata-not-an-object", "nan", "truncated-data"):
        damaged = registry.token_path("<borealis>", registry.get("<borealis>").active_version)
        _write(kind, damaged)
        assert not (damaged.parent / "pwned").exists()
        tokens = registry.active_tokens(BACKBONE, WIDTH)
        assert tokens.names() == ["<aurora>"], kind
        assert torch.equal(tokens.get("<aurora>").vectors, vectors)
        with pytest.raises(TokenError):
            registry.active_tokens(BACKBONE, WIDTH, strict=True)
