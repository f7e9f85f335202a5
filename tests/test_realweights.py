"""Real pretrained weights: opt-in (`pytest -m realweights`), never in CI, and never downloading in a test.

Put the weights in the Hugging Face cache first (with the network, outside the tests):

    python -c "from engine.loading import load_backbone; load_backbone('sd15'); load_backbone('sd21')"

then run `pytest -m realweights` (the tests run with HF_HUB_OFFLINE=1, from the cache only). They check on the
real checkpoints what the default suite checks on tiny ones: our one text tower gives exactly the conditioning
diffusers' Stable Diffusion pipeline computes (last layer for SD 1.5; penultimate layer for SD 2.1), and the
pooled feature is the CLIP text feature open_clip computes.
"""
import pytest
import torch

pytestmark = pytest.mark.realweights

PROMPTS = ["a photo of a red striped dress on a beach", "a teapot"]


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_conditioning_equals_the_stable_diffusion_pipeline(name):
    from diffusers import StableDiffusionPipeline

    from engine.backbones import get_backbone_config
    from engine.loading import load_backbone
    from engine.text import TextEncoder

    backbone = load_backbone(name, device="cpu", dtype="fp32")
    pipe = StableDiffusionPipeline.from_pretrained(get_backbone_config(name).diffusion, torch_dtype=torch.float32,
                                                   safety_checker=None)
    ours = TextEncoder(backbone).encode(PROMPTS)
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(PROMPTS, "cpu", 1, False)
    assert ours.seq.shape == theirs.shape
    assert ((ours.seq - theirs).norm() / theirs.norm()).item() < 1e-4

    import open_clip

    tokens = open_clip.get_tokenizer(backbone.config.clip_model)(PROMPTS)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(backbone.clip.encode_text(tokens).float(), dim=-1)
    assert torch.allclose(ours.pooled, reference, atol=1e-4)
