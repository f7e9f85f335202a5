"""ONNX export of the CLIP encoders: parity with PyTorch, custom tokens, the export cache, int8/fp16 acceptance.

One export of the tiny backbone per module (all three graphs) serves the parity tests; the cache
tests export once more with other settings (a graph of a tiny model takes a few seconds).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time

import numpy as np
import pytest
import torch

from engine.onnx import (
    ExportSettings,
    OnnxImageEncoder,
    OnnxTextIds,
    OnnxTextTower,
    cache_key,
    check_image_variant,
    convert_fp16,
    export_backbone,
    recall_at_k,
    relative_error,
    select_providers,
)
from engine.onnx.export import _read_graph
from engine.onnx.modules import ImageFeatures, TextIds
from engine.text import TextEncoder, TextTower
from engine.tokenizer import TokenLayout

TOL = 1e-4
PROMPTS = ["a photo of a red striped dress on a beach", "a mug", ""]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def export(tiny, cache_dir):
    return export_backbone(tiny, cache_dir)


def rel(a, b) -> float:
    return relative_error(np.asarray(a), np.asarray(b))


def test_export_writes_all_graphs_with_parity_recorded(export):
    assert not export.cache_hit
    for graph in ("image", "text_embeds", "text_ids"):
        info = export.manifest["graphs"][graph]
        assert export.path(graph).is_file()
        assert max(info["parity_rel_error"].values()) < TOL
    assert export.manifest["backbone"] == "tiny-random"


def test_image_parity_and_dynamic_batch(tiny, export):
    encoder = OnnxImageEncoder(export.path("image"))
    pixels = torch.randn(5, 3, tiny.image_size, tiny.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ImageFeatures(tiny.clip)(pixels).numpy()
    out = encoder.encode(pixels.numpy())
    assert out.shape == (5, tiny.embed_dim)
    assert rel(out, ref) < TOL
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.encode(pixels[:1].numpy()).shape == (1, tiny.embed_dim)
    assert encoder.encode(np.zeros((0, 3, tiny.image_size, tiny.image_size), np.float32)).shape == (0, tiny.embed_dim)


def test_image_encoder_matches_engine_image_encoder(tiny, export):
    from PIL import Image

    from engine.images import ImageEncoder

    images = [Image.new("RGB", (40, 30), c) for c in ("red", "navy", "olive")]
    engine = ImageEncoder(tiny)
    ref = engine.encode_pil(images).numpy()
    out = OnnxImageEncoder(export.path("image")).encode(engine.normalize(engine.pil_to_tensor(images)).numpy())
    assert rel(out, ref) < TOL


def test_text_embeddings_form_parity(tiny, export):
    gen = torch.Generator().manual_seed(2)
    table = tiny.clip.token_embedding.weight.detach()
    embeddings = table[torch.randint(0, tiny.vocab_size, (4, tiny.context_length), generator=gen)]
    eot = torch.tensor([3, 10, 76, 1])
    with torch.no_grad():
        ref_pooled, ref_seq = TextTower(tiny.clip)(embeddings, eot)
    pooled, seq = OnnxTextTower(export.path("text_embeds"))(embeddings, eot)
    assert isinstance(pooled, torch.Tensor) and pooled.shape == ref_pooled.shape and seq.shape == ref_seq.shape
    assert rel(pooled, ref_pooled) < TOL
    assert rel(seq, ref_seq) < TOL


def test_text_ids_form_parity(tiny, encoder, export):
    batch = encoder.tokenizer(PROMPTS, TokenLayout.from_sizes(tiny.vocab_size, {}))
    with torch.no_grad():
        ref_pooled, ref_seq = TextIds(TextTower(tiny.clip))(batch.ids, batch.eot_index)
    pooled, seq = OnnxTextIds(export.path("text_ids"))(batch.ids, batch.eot_index)
    assert rel(pooled, ref_pooled) < TOL
    assert rel(seq, ref_seq) < TOL
    assert rel(pooled, encoder.encode(PROMPTS).pooled) < TOL


def test_custom_tokens_through_the_embeddings_form(tiny, export):
    """The exported tower takes embeddings, so a token added after the export needs no re-export."""
    tokens = {"<aurora>": torch.randn(3, tiny.text_width, generator=torch.Generator().manual_seed(3)),
              "<zephyr>": torch.randn(1, tiny.text_width, generator=torch.Generator().manual_seed(4))}
    prompts = ["a photo of a <aurora> dress on a beach", "<zephyr> mug next to a <aurora> lamp", "a plain mug"]
    ref = TextEncoder(tiny).encode(prompts, tokens)
    swapped = TextEncoder(tiny)
    swapped.tower = OnnxTextTower(export.path("text_embeds"))
    out = swapped.encode(prompts, tokens)
    assert rel(out.pooled, ref.pooled) < TOL
    assert rel(out.seq, ref.seq) < TOL


def test_cache_hit_reuses_files(tiny, cache_dir, export):
    before = {p.name: p.stat().st_mtime_ns for p in export.directory.iterdir()}
    start = time.perf_counter()
    again = export_backbone(tiny, cache_dir)
    assert again.cache_hit and again.directory == export.directory
    assert time.perf_counter() - start < 5
    assert {p.name: p.stat().st_mtime_ns for p in export.directory.iterdir() if p.name in before} == before


def test_cache_key_follows_weights_and_settings(tiny):
    key, fields = cache_key(tiny, ExportSettings())
    assert cache_key(tiny, ExportSettings())[0] == key
    assert cache_key(tiny, ExportSettings(graphs=("image",)))[0] == key  # graphs share one folder
    assert cache_key(tiny, ExportSettings(opset=19))[0] != key
    assert cache_key(tiny, ExportSettings(optimize=False))[0] != key
    changed = dataclasses.replace(tiny, clip=copy.deepcopy(tiny.clip))
    with torch.no_grad():
        changed.clip.visual.proj[0, 0] += 1e-3
    assert cache_key(changed, ExportSettings())[0] != key
    renamed = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, name="tiny-other"))
    assert cache_key(renamed, ExportSettings())[0] != key
    assert fields["weights_sha256"] and fields["torch"]


def test_rebuild_when_settings_change_and_incomplete_graphs_are_redone(tiny, cache_dir, export):
    other = export_backbone(tiny, cache_dir, ExportSettings(graphs=("image",), optimize=False))
    assert not other.cache_hit and other.directory != export.directory
    assert other.manifest["graphs"]["image"]["optimize"] is False
    # a killed export leaves a graph without its record (written last): it counts as missing
    record = other.directory / "image.json"
    saved = record.read_text()
    record.unlink()
    assert _read_graph(other.directory, "image") is None
    record.write_text("{not json")
    assert _read_graph(other.directory, "image") is None
    record.write_text(saved)
    (other.directory / "image.onnx").rename(other.directory / "image.onnx.moved")
    assert _read_graph(other.directory, "image") is None
    (other.directory / "image.onnx.moved").rename(other.directory / "image.onnx")
    assert export_backbone(tiny, cache_dir, ExportSettings(graphs=("image",), optimize=False)).cache_hit
    with pytest.raises(KeyError, match="text_ids"):
        other.path("text_ids")


@pytest.fixture(scope="module")
def demo_pixels(tiny, tmp_path_factory):
    """Normalised pixels of a small demo catalog (the world generator), as the indexer decodes them."""
    from engine.images import ImageEncoder
    from indexer.decode import decode_image, fit
    from world.catalog import main as write_world

    out = tmp_path_factory.mktemp("world")
    assert write_world(["--out", str(out), "--products", "12", "--photos", "6", "--heldout", "4"]) == 0
    paths = sorted((out / "images").rglob("*.png"))
    raw = np.stack([fit(decode_image(p.read_bytes(), __import__("indexer").ImageLimits()), tiny.image_size)
                    for p in paths])
    enc = ImageEncoder(tiny)
    return enc.normalize(torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255).numpy()


def test_int8_accepted_or_rejected_with_the_figure_logged(export, demo_pixels, caplog):
    caplog.set_level(logging.INFO, logger="engine.onnx")
    accepted = check_image_variant(export, "int8", demo_pixels, threshold=0.0)
    assert accepted.accepted and 0.0 <= accepted.recall <= 1.0 and accepted.gallery == len(demo_pixels)
    assert (export.directory / "image.int8.onnx").is_file()
    assert any("int8 image encoder accepted" in r.getMessage() and "recall@10" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    rejected = check_image_variant(export, "int8", demo_pixels, threshold=1.01)
    assert not rejected.accepted and rejected.recall == pytest.approx(accepted.recall)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rejected" in m and f"{rejected.recall:.4f}" in m for m in messages)
    caplog.clear()
    check_image_variant(export, "int8", demo_pixels, threshold=1.01)  # decision cached per evaluation set
    assert any("cached decision" in r.getMessage() for r in caplog.records)


def test_int8_needs_enough_images(export, demo_pixels):
    check = check_image_variant(export, "int8", demo_pixels[:5])
    assert not check.accepted and "at least 11" in check.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_fp16_is_rejected_without_a_gpu(export, demo_pixels):
    check = check_image_variant(export, "fp16", demo_pixels)
    assert not check.accepted and "CUDA" in check.reason


def test_fp16_variant_converts_and_runs(tiny, export):
    """The fp16 file (for the CUDA provider) keeps fp32 inputs/outputs and stays close to fp32."""
    path = convert_fp16(export)
    assert path.name == "image.fp16.onnx" and convert_fp16(export) == path  # made once
    pixels = np.random.default_rng(5).standard_normal((4, 3, tiny.image_size, tiny.image_size)).astype(np.float32)
    half = OnnxImageEncoder(path, ["CPUExecutionProvider"]).encode(pixels)
    assert half.dtype == np.float32
    assert rel(half, OnnxImageEncoder(export.path("image")).encode(pixels)) < 1e-2


def test_recall_at_k():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((30, 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    assert recall_at_k(g, g, g, g, k=10, exclude_self=True) == 1.0
    noisy = g + 0.5 * rng.standard_normal(g.shape)
    assert recall_at_k(g, noisy, g, noisy, k=10, exclude_self=True) < 1.0
    with pytest.raises(ValueError, match="at least"):
        recall_at_k(g[:5], g[:5], g[:5], g[:5], k=10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_provider_is_cpu_here_and_logged(export, caplog):
    assert select_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        select_providers("cuda")
    caplog.set_level(logging.INFO, logger="engine.onnx.runtime")
    assert OnnxImageEncoder(export.path("image")).provider == "CPUExecutionProvider"
    assert any("provider CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_inputs_are_checked_at_the_boundary(tiny, export):
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        OnnxImageEncoder(export.path("image")).encode(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="embeddings of shape"):
        OnnxTextTower(export.path("text_embeds"))(torch.zeros(1, 5, tiny.text_width), torch.tensor([1]))
    with pytest.raises(ValueError, match="ExportSettings.graphs"):
        ExportSettings(graphs=("video",))
