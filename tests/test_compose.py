"""Composition q(w) = w*g([t,*,c]) + (1-w)*mean_i g([t,a_i,c]) on hand-checkable values."""
import math

import pytest
import torch

from engine.compose import attribute_prompts, compose, mix
from engine.text import TextFeatures
from engine.tokens import CustomToken, TokenMeta, TokenSet


def feats(pooled, seq):
    return TextFeatures(torch.tensor(pooled, dtype=torch.float32), torch.tensor(seq, dtype=torch.float32))


def test_mix_by_hand():
    token = feats([[1.0, 0.0]], [[[2.0, 0.0]]])
    attrs = feats([[0.0, 1.0], [0.0, 1.0]], [[[0.0, 4.0]], [[0.0, 2.0]]])
    q = mix(token, attrs, [0.0, 0.5, 1.0])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(q.pooled, torch.tensor([[0.0, 1.0], [s, s], [1.0, 0.0]]))
    # hidden states are mixed, not renormalised: 0.5*[2,0] + 0.5*mean([0,4],[0,2]) = [1, 1.5]
    torch.testing.assert_close(q.seq[:, 0], torch.tensor([[0.0, 3.0], [1.0, 1.5], [2.0, 0.0]]))


def test_mix_normalises_attribute_features_before_averaging():
    token = feats([[1.0, 0.0]], [[[0.0]]])
    attrs = feats([[0.0, 10.0], [0.0, -1.0]], [[[0.0]], [[0.0]]])  # unnormalised inputs
    q = mix(token, attrs, [0.0])
    # normalised: [0,1] and [0,-1] average to 0: q(0) is the zero vector's normalisation (all zeros)
    assert torch.allclose(q.pooled, torch.zeros(1, 2))


def test_weights_outside_unit_interval_are_refused():
    token = feats([[1.0, 0.0]], [[[0.0]]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix(token, token, [1.5])


def test_attribute_prompts_replace_each_token():
    meta_a = TokenMeta(parent="dress", backbone_id="x", attributes=["red", "worn"])
    meta_b = TokenMeta(parent="mug", backbone_id="x", attributes=["blue"])
    tokens = TokenSet([CustomToken("<a>", torch.zeros(1, 4), meta_a), CustomToken("<b>", torch.zeros(1, 4), meta_b)])
    assert attribute_prompts("a <a> dress on a beach", tokens) == ["a red dress on a beach", "a worn dress on a beach"]
    assert attribute_prompts("<a> dress, <b> mug", tokens) == ["red dress, blue mug", "worn dress, blue mug"]
    assert attribute_prompts("plain text", tokens) == ["plain text"]
    bare = TokenSet([CustomToken("<c>", torch.zeros(1, 4), TokenMeta(parent="lamp", backbone_id="x"))])
    assert attribute_prompts("a <c> lamp", bare) == ["a lamp"]


def test_compose_endpoints_equal_the_plain_encodings(tiny, encoder):
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red", "old", "dark"])
    token = CustomToken("<aurora>", torch.randn(2, tiny.text_width) * 0.02, meta)
    tokens = TokenSet([token])
    q = compose(encoder, "a <aurora> dress on a beach", tokens, [0.0, 1.0])
    direct = encoder.encode(["a <aurora> dress on a beach"], tokens.vectors())
    attrs = encoder.encode([f"a {a} dress on a beach" for a in meta.attributes])
    torch.testing.assert_close(q.pooled[1], direct.pooled[0])
    torch.testing.assert_close(q.seq[1], direct.seq[0])
    expect = torch.nn.functional.normalize(attrs.pooled.mean(0), dim=-1)
    torch.testing.assert_close(q.pooled[0], expect)
    torch.testing.assert_close(q.seq[0], attrs.seq.mean(0))
