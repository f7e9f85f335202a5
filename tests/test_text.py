"""One text tower: pooled feature for retrieval and hidden states equal to what diffusers computes."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from engine.backbones import get_backbone_config
from engine.hf_convert import hf_tokenizer, to_diffusers_pipeline, to_hf_text_model, write_hf_tokenizer
from engine.text import TextEncoder
from engine.tokenizer import TokenLayout

PROMPTS = ["a photo of a red striped dress on a beach", "a mug", ""]


def test_pooled_matches_open_clip_for_plain_prompts(tiny, encoder):
    feats = encoder.encode(PROMPTS)
    ids = encoder.tokenizer(PROMPTS, TokenLayout.from_sizes(tiny.vocab_size, {})).ids
    with torch.no_grad():
        ref = F.normalize(tiny.clip.encode_text(ids), dim=-1)
    torch.testing.assert_close(feats.pooled, ref, rtol=1e-5, atol=1e-6)
    assert feats.seq.shape == (3, tiny.context_length, tiny.text_width)


def test_pooling_reads_end_of_text_not_argmax(tiny, encoder):
    """open_clip's argmax pooling would read the custom token (id >= 49408); we read the end-of-text."""
    vec = {"<aurora>": torch.randn(2, tiny.text_width)}
    layout = TokenLayout.from_sizes(tiny.vocab_size, {"<aurora>": 2})
    batch = encoder.tokenizer(["a <aurora> dress"], layout)
    assert int(batch.ids[0].argmax()) != int(batch.eot_index[0])
    assert int(batch.ids[0, batch.eot_index[0]]) == encoder.tokenizer.eot_id
    feats = encoder.encode(["a <aurora> dress"], vec)
    x = encoder.embed(batch.ids, vec["<aurora>"])
    pooled, seq = encoder.tower(x, batch.eot_index)
    at_eot = seq[0, batch.eot_index[0]]  # seq is after ln_final of the last layer
    expect = F.normalize(at_eot @ tiny.clip.text_projection, dim=-1)
    torch.testing.assert_close(feats.pooled[0], expect)


def test_tokenizer_pads_like_the_diffusion_tokenizer(tmp_path, tiny, encoder):
    hf = hf_tokenizer(write_hf_tokenizer(tmp_path, tiny.context_length, "eot"))
    ours = encoder.tokenizer(PROMPTS, TokenLayout.from_sizes(tiny.vocab_size, {})).ids
    theirs = hf(PROMPTS, padding="max_length", max_length=tiny.context_length, truncation=True,
                return_tensors="pt").input_ids
    assert torch.equal(ours, theirs)
    assert int(ours[1, -1]) == 49407  # SD 1.x pads with end-of-text, not open_clip's 0


def test_hidden_states_equal_diffusers_encode_prompt(tmp_path, tiny, encoder):
    pipe = to_diffusers_pipeline(tiny, tmp_path / "tok")
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(PROMPTS, "cpu", 1, False)
    ours = encoder.encode(PROMPTS).seq
    rel = (ours - theirs).norm() / theirs.norm()
    assert rel < 1e-5


def test_pooled_equals_transformers_text_embeds(tmp_path, tiny, encoder):
    model = to_hf_text_model(tiny)
    hf = hf_tokenizer(write_hf_tokenizer(tmp_path, tiny.context_length, "eot"))
    ids = hf(PROMPTS[:2], padding="max_length", max_length=tiny.context_length, return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = F.normalize(model(ids).text_embeds, dim=-1)
    torch.testing.assert_close(encoder.encode(PROMPTS[:2]).pooled, theirs, rtol=1e-5, atol=1e-6)


def test_penultimate_layer_and_zero_padding_match_sd2_layout(tmp_path, tiny):
    """SD 2.x: conditioning = final_layer_norm(penultimate hidden state), padding id 0."""
    sd2_like = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, cond_layer="penultimate",
                                                                    pad="zero"))
    enc = TextEncoder(sd2_like)
    model = to_hf_text_model(sd2_like)
    assert model.config.num_hidden_layers == len(tiny.clip.transformer.resblocks) - 1
    hf = hf_tokenizer(write_hf_tokenizer(tmp_path, tiny.context_length, "zero"))
    ids = hf(PROMPTS, padding="max_length", max_length=tiny.context_length, return_tensors="pt").input_ids
    assert int(ids[1, -1]) == 0
    ours = enc.encode(PROMPTS)
    assert torch.equal(enc.tokenizer(PROMPTS, TokenLayout.from_sizes(tiny.vocab_size, {})).ids, ids)
    with torch.no_grad():
        theirs = model(ids).last_hidden_state
    assert (ours.seq - theirs).norm() / theirs.norm() < 1e-5
    # the pooled (retrieval) feature still comes from the full tower, at the end-of-text position
    torch.testing.assert_close(ours.pooled, TextEncoder(tiny).encode(PROMPTS).pooled)


def test_sd15_registry_conditioning_choice():
    assert get_backbone_config("sd15").cond_layer == "last"
    assert get_backbone_config("sd21").cond_layer == "penultimate"


def test_long_prompts_are_truncated_keeping_end_of_text(tiny, encoder):
    long = " ".join(["red"] * 200)
    batch = encoder.tokenizer([long], TokenLayout.from_sizes(tiny.vocab_size, {}))
    assert batch.ids.shape[1] == tiny.context_length
    assert int(batch.ids[0, -1]) == encoder.tokenizer.eot_id


@pytest.mark.parametrize("bad", ["a <Aurora> dress", "a <aurora dress", "a aurora> dress", "<>", "a <a b> c"])
def test_malformed_placeholders_are_clear_errors(encoder, bad):
    from engine.errors import TokenError

    with pytest.raises(TokenError, match="'<name>'|angle brackets|stray brackets"):
        encoder.encode([bad])
