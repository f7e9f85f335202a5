"""Architecture-true random backbones: a reduced-depth sd15 written by the CLI loads through the normal loader and
searches; the shipped configs are SD's real shapes."""
import numpy as np
import pytest
import torch

from coinage.cli import main
from engine.loading import load_backbone
from engine.random_backbone import Shrink, build_random_backbone, diffusion_configs, shrink_diffusion_cfgs

pytestmark = pytest.mark.usefixtures("one_thread")

REDUCED = ["--clip-layers", "1", "--unet-layers-per-block", "1", "--width-divisor", "8"]


@pytest.fixture(scope="module")
def reduced_sd15(tmp_path_factory):
    out = tmp_path_factory.mktemp("random") / "sd15"
    assert main(["backbone", "random", "sd15", str(out), "--seed", "3", *REDUCED]) == 0
    return out


def test_shipped_configs_are_the_real_architectures():
    import open_clip

    sd15, sd21 = diffusion_configs("sd15"), diffusion_configs("sd21")
    assert sd15["unet"]["block_out_channels"] == [320, 640, 1280, 1280] and sd15["unet"]["layers_per_block"] == 2
    for name, configs in (("ViT-L-14-quickgelu", sd15), ("ViT-H-14", sd21)):
        # the UNet cross-attends to the text tower of its CLIP
        assert configs["unet"]["cross_attention_dim"] == open_clip.get_model_config(name)["text_cfg"]["width"]
    assert (sd15["unet"]["sample_size"], sd21["unet"]["sample_size"]) == (64, 96)  # 512 and 768 px over the VAE's 8x
    assert sd21["scheduler"]["prediction_type"] == "v_prediction" and sd21["unet"]["use_linear_projection"]
    assert sd15["vae"]["scaling_factor"] == 0.18215


def test_reduced_sd15_loads_through_the_loader_and_searches(reduced_sd15, tmp_path):
    from engine.query import QueryConfig, QueryService, SearchRequest
    from engine.store import Point, StoreConfig, open_store, point_id
    from engine.text import TextEncoder
    from engine.tokens import TokenSet

    bb = load_backbone(str(reduced_sd15), device="cpu")
    assert bb.id == "sd15-random-l1-b1-w8-seed3" and bb.has_diffusion
    assert (bb.config.cond_layer, bb.config.pad, bb.config.image_size) == ("last", "eot", 512)
    assert bb.clip_cfg["vision_cfg"]["layers"] == 1 and bb.clip_cfg["quick_gelu"] is True
    assert (bb.embed_dim, bb.text_width, bb.context_length, bb.image_size) == (96, 96, 77, 224)
    assert list(bb.unet.config.block_out_channels) == [40, 80, 160, 160]
    assert bb.unet.config.cross_attention_dim == bb.text_width and type(bb.scheduler).__name__ == "PNDMScheduler"

    encoded = TextEncoder(bb).encode(["a red dress"])
    assert encoded.pooled.shape == (1, 96) and encoded.seq.shape == (1, 77, 96)
    with torch.no_grad():  # one UNet call at the real latent size conditions on those states
        out = bb.unet(torch.zeros(1, 4, 64, 64), torch.tensor([10]), encoded.seq).sample
    assert out.shape == (1, 4, 64, 64) and torch.isfinite(out).all()

    store = open_store(StoreConfig(backend="embedded", path=str(tmp_path / "store")))
    store.create_collection("products", dim=bb.embed_dim, payload_indexes={"category": "keyword"})
    service = QueryService(bb, store, TokenSet([]), None, QueryConfig(text_runtime="torch"))
    rng = np.random.default_rng(0)
    from PIL import Image

    photos = [Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)) for _ in range(3)]
    store.upsert("products", [Point(point_id(f"p{i}"), service.image_vector(p).numpy(), {"sku": f"p{i}",
                                                                                      "category": "dress"})
                              for i, p in enumerate(photos)])
    response = service.search(SearchRequest("a red dress", limit=2))
    assert len(response.results) == 2
    store.close()


def test_same_seed_same_weights_and_bad_shrinks_are_clear_errors(capsys, tmp_path):
    a = build_random_backbone("sd21", seed=1, shrink=Shrink(1, 1, 8))
    b = build_random_backbone("sd21", seed=1, shrink=Shrink(1, 1, 8))
    assert a.text_width == a.unet.config.cross_attention_dim == 128 and a.config.cond_layer == "penultimate"
    torch.testing.assert_close(a.clip.token_embedding.weight, b.clip.token_embedding.weight)
    torch.testing.assert_close(next(a.unet.parameters()), next(b.unet.parameters()))
    with pytest.raises(ValueError, match="width_divisor 3 does not divide"):
        shrink_diffusion_cfgs(diffusion_configs("sd15"), Shrink(width_divisor=3))
    assert main(["backbone", "random", "sd15", str(tmp_path / "x"), "--clip-layers", "0"]) == 2
    assert "clip_layers must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
