"""Query parsing, request validation, GAIR scoring and the preview cache: no backbone needed."""
import base64
import json

import pytest
import torch

from engine.errors import CoinageError, TokenError, UnknownTokenError
from engine.query import (
    PreviewCache,
    QueryConfig,
    QueryError,
    SearchRequest,
    cache_key,
    choose,
    parse_query,
    score_weights,
    text_only_prompt,
)
from engine.tokens import CustomToken, TokenMeta, TokenSet


def token(placeholder, parent, attributes=("red", "old")):
    return CustomToken(placeholder, torch.zeros(2, 4), TokenMeta(parent=parent, backbone_id="x",
                                                                 attributes=list(attributes)))


@pytest.fixture
def tokens():
    return TokenSet([token("<aurora>", "dress"), token("<borealis>", "dress"), token("<mugsy>", "coffee mug")])


def test_parent_is_inserted_after_the_token_and_noted(tokens):
    parsed = parse_query("  <aurora>   on a beach ", tokens)
    assert parsed.prompt == "<aurora> dress on a beach"
    assert parsed.placeholders == ("<aurora>",)
    assert len(parsed.notes) == 1 and "'dress'" in parsed.notes[0] and "<aurora>" in parsed.notes[0]


@pytest.mark.parametrize("query", ["a <aurora> dress on a beach", "<aurora> DRESSES at night", "a dress like <aurora>"])
def test_no_insertion_when_the_parent_is_named(tokens, query):
    parsed = parse_query(query, tokens)
    assert parsed.prompt == " ".join(query.split()) and parsed.notes == ()


def test_several_tokens_per_query(tokens):
    parsed = parse_query("<aurora> and <borealis> next to a <mugsy>", tokens)
    assert parsed.placeholders == ("<aurora>", "<borealis>", "<mugsy>")
    assert parsed.prompt == "<aurora> dress and <borealis> dress next to a <mugsy> coffee mug"
    assert len(parsed.notes) == 3
    assert parse_query("<aurora> or <aurora>", tokens).placeholders == ("<aurora>",)


def test_plain_text_query(tokens):
    parsed = parse_query("red shoes", tokens)
    assert parsed.prompt == "red shoes" and not parsed.has_tokens and parsed.notes == ()


def test_bare_token_name_gets_a_note(tokens):
    parsed = parse_query("aurora dress", tokens)
    assert parsed.placeholders == () and any("write <aurora>" in n for n in parsed.notes)


def test_unknown_token_suggests_close_names(tokens):
    with pytest.raises(UnknownTokenError) as info:
        parse_query("<auroa> dress on a beach", tokens)
    assert info.value.suggestions[0] == "<aurora>"
    assert "Did you mean <aurora>" in str(info.value) and "Register the concept" in str(info.value)


@pytest.mark.parametrize("query, match", [("<Aurora> dress", "malformed placeholder"),
                                          ("a dress < 50", "unbalanced"), ("<aurora dress", "unbalanced")])
def test_malformed_queries(tokens, query, match):
    with pytest.raises(TokenError, match=match):
        parse_query(query, tokens)


@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_empty_query(tokens, query):
    with pytest.raises(QueryError, match="empty query"):
        parse_query(query, tokens)


def test_too_long_query(tokens):
    with pytest.raises(QueryError, match="shorten it"):
        parse_query("dress " * 200, tokens, max_chars=500)


def test_text_only_prompt_replaces_tokens_by_their_parent(tokens):
    assert text_only_prompt(parse_query("<aurora> on a beach", tokens), tokens) == "dress on a beach"
    assert text_only_prompt(parse_query("a <aurora> red dress", tokens), tokens) == "a dress red dress"
    assert text_only_prompt(parse_query("<mugsy> mugs", tokens), tokens) == "coffee mug mugs"


def test_request_from_json_validates_fields():
    png = base64.b64encode(b"\x89PNG fake").decode()
    request = SearchRequest.from_json({"query": "red dress", "limit": 5, "offset": 10, "category": ["dress", "skirt"],
                                       "max_price": 50, "ranges": {"rating": [4, None]}, "image": png,
                                       "gair": False})
    assert request.limit == 5 and request.ranges == {"rating": (4, None)} and request.image == b"\x89PNG fake"
    assert json.loads(json.dumps(request.to_json()))["image"] is True
    bad = [({"query": "x", "flavour": "red"}, "unknown search request field"), ({"limit": 0}, "'limit'"),
           ({"limit": "10"}, "'limit'"), ({"weight": 1.5}, "'weight'"), ({"offset": -1}, "'offset'"),
           ({"min_price": 9, "max_price": 1}, "min_price"), ({"image": "not base64!"}, "base64"),
           ({"ranges": {"price": [None, None]}}, "at least one"), ({"method": "magic"}, "'method'"),
           ({"seed": True}, "'seed'"), ({"category": 3}, "'category'")]
    for body, match in bad:
        with pytest.raises(QueryError, match=match):
            SearchRequest.from_json(body)
    with pytest.raises(QueryError, match="JSON object"):
        SearchRequest.from_json(["query"])


def test_query_errors_are_coinage_errors():
    assert issubclass(QueryError, CoinageError)


def test_config_validation():
    assert QueryConfig(weights=(0, 1)).weights == (0.0, 1.0)
    for kwargs, match in [({"weights": ()}, "empty"), ({"weights": (0, 2)}, r"\[0, 1\]"),
                          ({"images_per_weight": 0}, "images_per_weight"), ({"text_runtime": "tf"}, "text_runtime"),
                          ({"default_limit": 500}, "max_limit")]:
        with pytest.raises(QueryError, match=match):
            QueryConfig(**kwargs)


def test_score_weights_by_hand():
    obj, ctx = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    # candidate w_i sits at angle theta_i between the context (theta=0) and the object (theta=pi/2) direction
    angles = torch.tensor([0.0, 0.3, 0.785398, 1.2, 1.5708])
    cand = torch.stack([torch.sin(angles), torch.cos(angles), torch.zeros(5)], dim=1)[:, None, :]
    score, context_score, object_score = score_weights(cand, ctx, [obj])
    torch.testing.assert_close(object_score, torch.sin(angles))
    torch.testing.assert_close(context_score, torch.cos(angles))
    torch.testing.assert_close(score, torch.minimum(torch.sin(angles), torch.cos(angles)))
    assert choose(score) == 2  # the balanced candidate
    # two tokens: the object term is the lower of the two
    other = torch.tensor([[0.0, 0.0, 1.0]])
    _, _, both = score_weights(cand, ctx, [obj, other])
    torch.testing.assert_close(both, torch.zeros(5))


def test_score_weights_means_over_images_and_normalises():
    cand = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # one w, two images (unnormalised)
    score, context_score, object_score = score_weights(cand, torch.tensor([[0.0, 5.0]]), [torch.tensor([[1.0, 0.0]])])
    torch.testing.assert_close(context_score, torch.tensor([0.5]))
    torch.testing.assert_close(object_score, torch.tensor([0.5]))


def test_choose_takes_the_first_of_ties():
    assert choose(torch.tensor([0.1, 0.5, 0.5, 0.2])) == 1


def test_preview_cache_lru_and_shared_directory(tmp_path):
    a = PreviewCache(max_items=2, directory=tmp_path)
    keys = [cache_key(i=i) for i in range(3)]
    for i, key in enumerate(keys):
        a.put_png(key, bytes([i]))
    assert len(a._png) == 2  # evicted from memory ...
    assert a.get_png(keys[0]) == b"\x00"  # ... but still on disk
    b = PreviewCache(max_items=2, directory=tmp_path)  # another process sharing the directory
    assert b.get_png(keys[2]) == b"\x02"
    a.put_json(keys[1], {"w_star": 0.5})
    assert b.get_json(keys[1]) == {"w_star": 0.5}
    assert b.get_png("../../etc/passwd") is None and b.get_png(cache_key(i=99)) is None
    assert not list(tmp_path.glob("*.tmp"))
    memory = PreviewCache(max_items=1)
    memory.put_png(keys[0], b"x")
    memory.put_png(keys[1], b"y")
    assert memory.get_png(keys[0]) is None and memory.get_png(keys[1]) == b"y"
    with pytest.raises(ValueError, match="hex"):
        memory.put_png("not-a-key", b"z")


def test_cache_key_is_stable_and_order_free():
    assert cache_key(a=1, b=[0.5, 1.0]) == cache_key(b=[0.5, 1.0], a=1)
    assert cache_key(a=1) != cache_key(a=2)
