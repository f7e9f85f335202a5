"""The query service's text side through the ONNX text tower (input-embeddings graph) equals PyTorch's."""
import logging

import pytest
import torch

from engine.compose import compose
from engine.query import QueryConfig, QueryError, QueryService
from engine.query.text_runtime import onnx_text_tower
from engine.tokens import CustomToken, TokenMeta, TokenSet

pytest.importorskip("engine.onnx")
pytest.importorskip("onnxruntime")

QUERY = "<aurora> on a beach"
WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def tokens(tiny):
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red", "old", "dark"])
    return TokenSet([CustomToken("<aurora>", torch.randn(3, tiny.text_width,
                                                        generator=torch.Generator().manual_seed(0)) * 0.05, meta)])


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx"))


def test_onnx_and_torch_give_the_same_query_features(tiny, tokens, onnx_dir):
    torch_service = QueryService(tiny, None, tokens, None, QueryConfig(text_runtime="torch"))
    onnx_service = QueryService(tiny, None, tokens, None, QueryConfig(text_runtime="onnx", onnx_cache_dir=onnx_dir))
    assert torch_service.text_runtime == "torch" and onnx_service.text_runtime == "OnnxTextTower"
    a = torch_service.composed_vectors(QUERY, WEIGHTS)
    b = onnx_service.composed_vectors(QUERY, WEIGHTS)
    assert (a - b).abs().max().item() < 1e-4
    assert (torch_service.text_only_vector(QUERY) - onnx_service.text_only_vector(QUERY)).abs().max().item() < 1e-4
    seq_a = compose(torch_service.encoder, "<aurora> dress on a beach", tokens, WEIGHTS).seq
    with torch.no_grad():
        seq_b = compose(onnx_service.encoder, "<aurora> dress on a beach", tokens, WEIGHTS).seq
    assert ((seq_a - seq_b).norm() / seq_a.norm()).item() < 1e-4  # the conditioning GAIR generates from
    auto = QueryService(tiny, None, tokens, None, QueryConfig(text_runtime="auto", onnx_cache_dir=onnx_dir))
    assert auto.text_runtime == "OnnxTextTower"  # the export is cached: no second export


def test_auto_falls_back_to_torch_and_onnx_mode_fails_clearly(tiny, monkeypatch, caplog):
    import engine.onnx

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(engine.onnx, "export_backbone", broken)
    with caplog.at_level(logging.WARNING, logger="engine.query.service"):
        assert onnx_text_tower(tiny, "auto") is None
    assert "exporter exploded" in caplog.text and "using PyTorch" in caplog.text
    with pytest.raises(QueryError, match="text_runtime='torch'"):
        onnx_text_tower(tiny, "onnx")
    assert onnx_text_tower(tiny, "torch") is None
