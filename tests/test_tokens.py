"""Custom tokens: registration, file contract (diffusers-loadable safetensors), refusal of bad files."""
import pickle
import struct

import pytest
import torch

from engine.errors import TokenError, UnknownTokenError
from engine.hf_convert import to_diffusers_pipeline
from engine.text import TextEncoder
from engine.tokens import CustomToken, TokenMeta, TokenSet, load_token, save_token


def make_token(tiny, placeholder="<aurora>", n=3, seed=0, **meta):
    g = torch.Generator().manual_seed(seed)
    return CustomToken(placeholder, torch.randn(n, tiny.text_width, generator=g) * 0.02,
                       TokenMeta(parent=meta.pop("parent", "dress"), backbone_id=tiny.id, **meta))


def test_tokens_leave_the_embedding_table_and_plain_prompts_untouched(tiny, encoder):
    before = tiny.clip.token_embedding.weight.clone()
    plain = encoder.encode(["a red dress"])
    tokens = TokenSet([make_token(tiny)])
    with_tokens = encoder.encode(["a red dress", "a <aurora> dress"], tokens.vectors())
    assert torch.equal(tiny.clip.token_embedding.weight, before)
    torch.testing.assert_close(with_tokens.pooled[:1], plain.pooled)
    assert not torch.allclose(with_tokens.pooled[1], plain.pooled[0])


def test_learned_vectors_are_what_the_tower_sees(tiny, encoder):
    token = make_token(tiny, n=2)
    tokens = TokenSet([token])
    ids = encoder.tokenizer(["<aurora>"], __import__("engine.tokenizer", fromlist=["TokenLayout"])
                            .TokenLayout.from_sizes(tiny.vocab_size, {"<aurora>": 2})).ids
    x = encoder.embed(ids, token.vectors)
    torch.testing.assert_close(x[0, 1:3], token.vectors)
    assert encoder.encode(["<aurora>"], tokens.vectors()).pooled.shape == (1, tiny.embed_dim)


def test_several_tokens_in_one_prompt(tiny, encoder):
    a, b = make_token(tiny, "<aurora>", 2, seed=1), make_token(tiny, "<borealis>", 3, seed=2)
    both = TokenSet([a, b]).vectors()
    f = encoder.encode(["<aurora> dress and <borealis> mug", "<borealis> mug and <aurora> dress"], both)
    only_a = encoder.encode(["<aurora> dress and <borealis> mug"], {"<aurora>": a.vectors, "<borealis>": b.vectors * 2})
    assert not torch.allclose(f.pooled[0], f.pooled[1])
    assert not torch.allclose(f.pooled[0], only_a.pooled[0])  # b's vectors matter


def test_unknown_placeholder_suggests_close_names(tiny, encoder):
    tokens = TokenSet([make_token(tiny, "<aurora>")])
    with pytest.raises(UnknownTokenError, match="Did you mean <aurora>") as info:
        encoder.encode(["a <aurorra> dress"], tokens.vectors())
    assert info.value.suggestions == ["<aurora>"]
    with pytest.raises(UnknownTokenError, match="none are registered"):
        encoder.encode(["a <x> dress"])


def test_file_roundtrip_keeps_vectors_and_metadata(tmp_path, tiny):
    token = make_token(tiny, attributes=["red", "worn"], metrics={"auc": 0.97})
    path = save_token(token, tmp_path / "aurora.safetensors")
    loaded = load_token(path, backbone_id=tiny.id, width=tiny.text_width)
    assert torch.equal(loaded.vectors, token.vectors)
    assert loaded.meta == token.meta and loaded.version == token.version
    assert not (tmp_path / "aurora.safetensors.tmp").exists()


def test_token_we_save_loads_into_diffusers_with_equal_conditioning(tmp_path, tiny, encoder):
    a, b = make_token(tiny, "<aurora>", 3, seed=3), make_token(tiny, "<borealis>", 1, seed=4)
    pipe = to_diffusers_pipeline(tiny, tmp_path / "tok")
    for tok in (a, b):
        pipe.load_textual_inversion(str(save_token(tok, tmp_path / f"{tok.placeholder[1:-1]}.safetensors")))
    prompts = ["a photo of a <aurora> dress on a beach", "<borealis> mug next to a <aurora> dress"]
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    ours = encoder.encode(prompts, TokenSet([a, b]).vectors()).seq
    assert (ours - theirs).norm() / theirs.norm() < 1e-5


def test_pickle_files_are_refused_unopened(tmp_path, tiny):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"<aurora>": [1.0, 2.0]}))
    with pytest.raises(TokenError, match="pickle"):
        load_token(path)
    torch.save({"<aurora>": torch.zeros(1, 32)}, tmp_path / "t.pt")
    with pytest.raises(TokenError, match="pickle"):
        load_token(tmp_path / "t.pt")


def test_oversized_header_and_garbage_are_refused(tmp_path):
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", 1 << 40) + b"{" + b" " * 16)
    with pytest.raises(TokenError, match="header"):
        load_token(big)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a token")
    with pytest.raises(TokenError):
        load_token(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(TokenError, match="too short"):
        load_token(empty)


def test_wrong_width_backbone_and_values_are_refused(tmp_path, tiny):
    path = save_token(make_token(tiny), tmp_path / "a.safetensors")
    with pytest.raises(TokenError, match="width 32 does not match .* 768"):
        load_token(path, width=768)
    with pytest.raises(TokenError, match="trained on backbone 'tiny-random', not 'sd15'"):
        load_token(path, backbone_id="sd15")
    from safetensors.torch import save_file

    bad = torch.zeros(2, 32)
    bad[0, 0] = float("nan")
    save_file({"<nan>": bad}, str(tmp_path / "nan.safetensors"), metadata={"coinage": TokenMeta("dress", "tiny-random").to_json()})
    with pytest.raises(TokenError, match="NaN or inf"):
        load_token(tmp_path / "nan.safetensors")
    save_file({"<a>": torch.zeros(1, 32), "<b>": torch.zeros(1, 32)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(TokenError, match="exactly one"):
        load_token(tmp_path / "two.safetensors")


def test_plain_diffusers_file_needs_a_parent_word(tmp_path):
    from safetensors.torch import save_file

    save_file({"<cat-toy>": torch.zeros(2, 32)}, str(tmp_path / "learned_embeds.safetensors"))
    with pytest.raises(TokenError, match="--parent"):
        load_token(tmp_path / "learned_embeds.safetensors")
    token = load_token(tmp_path / "learned_embeds.safetensors", parent="toy")
    assert token.meta.parent == "toy" and token.num_vectors == 2


@pytest.mark.parametrize("name", ["aurora", "<Aurora>", "<a b>", "<>", "<" + "x" * 41 + ">"])
def test_malformed_placeholder_names(tiny, name):
    with pytest.raises(TokenError, match="malformed placeholder"):
        make_token(tiny, name)


def test_split_words_names_the_words_the_vocabulary_does_not_hold_whole():
    from engine.tokenizer import split_words

    assert split_words("dress") == {} and split_words("T-Shirt  ") == {} and split_words("coffee mug") == {}
    assert split_words("Dungarees") == {"dungarees": ["dun", "gare", "es"]}
    emoji = split_words("\N{DRESS}")  # raw UTF-8 byte pieces, shown escaped where they do not decode alone
    assert len(emoji) == 1 and len(next(iter(emoji.values()))) > 1
