import json

import pytest
import torch

from engine.backbones import (BackboneConfig, get_backbone_config, list_backbones, register_backbone,
                              resolve_backbone)
from engine.device import select_device, select_dtype
from engine.errors import BackboneNotFound, BackboneUnavailable
from engine.loading import load_backbone, save_backbone
from engine.text import TextEncoder


def test_registry_has_the_named_backbones():
    assert {"tiny-random", "sd15", "sd21"} <= set(list_backbones())
    sd15, sd21 = get_backbone_config("sd15"), get_backbone_config("sd21")
    assert sd15.clip_model == "ViT-L-14-quickgelu" and sd15.clip_pretrained == "openai"
    assert (sd15.cond_layer, sd15.pad) == ("last", "eot")
    assert (sd21.cond_layer, sd21.pad) == ("penultimate", "zero")


def test_real_configs_match_sd_text_widths():
    import open_clip

    # SD 1.5's UNet cross-attends to 768-wide states, SD 2.1's to 1024: the CLIP text towers must match.
    assert open_clip.get_model_config("ViT-L-14-quickgelu")["text_cfg"]["width"] == 768
    assert open_clip.get_model_config("ViT-L-14-quickgelu")["quick_gelu"] is True
    assert open_clip.get_model_config("ViT-H-14")["text_cfg"]["width"] == 1024


def test_register_refuses_silent_overwrite():
    cfg = BackboneConfig(name="tiny-random", clip_model="x")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(cfg)


def test_unknown_identifiers_name_the_fix(tmp_path):
    with pytest.raises(BackboneNotFound, match="registered backbones: .*tiny-random"):
        resolve_backbone("nope")
    with pytest.raises(BackboneNotFound, match="does not exist"):
        resolve_backbone(str(tmp_path / "missing") + "/")
    with pytest.raises(BackboneNotFound, match="has no coinage_backbone.json"):
        resolve_backbone(str(tmp_path))
    with pytest.raises(BackboneNotFound, match="hf-hub:org/repo"):
        resolve_backbone("hf-hub:justone")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="cond_layer"):
        BackboneConfig(name="x", clip_model="y", cond_layer="middle")
    with pytest.raises(ValueError, match="pad"):
        BackboneConfig(name="x", clip_model="y", pad="space")


def test_sd15_offline_error_names_hub_cache_and_local_copy():
    with pytest.raises(BackboneUnavailable) as info:
        load_backbone("sd15", device="cpu")
    msg = str(info.value)
    assert "hub" in msg.lower() and "cache" in msg.lower()
    assert "--backbone" in msg and "--clip-weights" in msg
    assert "openai" in msg or "timm/" in msg


def test_diffusion_offline_error_names_repo(monkeypatch):
    import engine.loading as loading

    config = get_backbone_config("sd15")
    with pytest.raises(BackboneUnavailable, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        loading._load_diffusion(config)


def test_hub_identifier_uses_downloaded_directory(tmp_path, tiny):
    save_backbone(tiny, tmp_path / "bb", name="hubbed")
    config, local = resolve_backbone("hf-hub:org/repo", download=lambda repo: str(tmp_path / "bb"))
    assert local == tmp_path / "bb" and config.name == "hubbed"
    assert config.clip_model == f"local-dir:{tmp_path / 'bb'}"


def test_save_load_roundtrip(tmp_path, tiny):
    out = save_backbone(tiny, tmp_path / "bb")
    for name in ("coinage_backbone.json", "open_clip_config.json", "open_clip_model.safetensors",
                 "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "coinage_backbone.json").read_text())
    assert manifest["name"] == "tiny-random" and manifest["builder"] is None
    loaded = load_backbone(str(out), device="cpu")
    assert loaded.id == tiny.id and loaded.has_diffusion
    prompts = ["a photo of a red striped dress", "a mug"]
    a, b = TextEncoder(tiny).encode(prompts), TextEncoder(loaded).encode(prompts)
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.seq, b.seq)
    x = torch.randn(1, 4, 16, 16)
    t = torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(tiny.unet(x, t, a.seq[:1]).sample, loaded.unet(x, t, b.seq[:1]).sample)
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tiny.clip.encode_image(image), loaded.clip.encode_image(image))


def test_fp16_save_is_smaller_and_loads_as_fp32(tmp_path, tiny):
    full = save_backbone(tiny, tmp_path / "f32")
    half = save_backbone(tiny, tmp_path / "f16", dtype="fp16")
    size = lambda p: (p / "open_clip_model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = load_backbone(str(half), device="cpu")
    assert loaded.clip.token_embedding.weight.dtype == torch.float32
    assert next(tiny.unet.parameters()).dtype == torch.float32  # saving fp16 left the source intact


def test_incomplete_directory_is_a_clear_error(tmp_path, tiny):
    out = save_backbone(tiny, tmp_path / "bb")
    (out / "open_clip_model.safetensors").unlink()
    (out / "open_clip_config.json").write_text("{}")
    with pytest.raises(BackboneUnavailable, match="open_clip_config.json"):
        load_backbone(str(out), device="cpu")


def test_device_and_dtype_selection():
    cpu = select_device("cpu")
    assert select_dtype(cpu) == torch.float32
    with pytest.raises(ValueError, match="CPU"):
        select_dtype(cpu, "fp16")
    if not torch.cuda.is_available():
        assert select_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            select_device("cuda")
