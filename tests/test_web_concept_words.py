"""Concept words and version names that are not printable text (issue #27 minors): NUL, newlines, bidi overrides,
zero-width spaces and lone surrogates in the parent or an attribute, 5,000 attributes, a surrogate as a version
name. Each is refused with a 400 naming the field before anything is stored, never a 500 or a raw word on a page."""
import base64
import json

import pytest

from engine.concepts import ConceptError, ConceptRegistry
from web.testing import png_bytes

PASSWORD = "words-pw"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def register_json(client, **fields):
    body = {"placeholder": "<wordy>", "parent": "dress", "attributes": ["red", "striped"], "steps": 2,
            "images": [base64.b64encode(png_bytes(i)).decode() for i in range(3)], **fields}
    # json.dumps keeps a lone surrogate as its \\ud800 escape, as a hostile client would send it
    return client.post("/api/concepts", data=json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("fields, field", [
    ({"parent": "dress\u0000"}, "parent"),
    ({"parent": "dr\ud800ess"}, "parent"),
    ({"parent": "\u202edress"}, "parent"),
    ({"attributes": ["red", "str\u0000iped"]}, "attributes"),
    ({"attributes": ["red", "two\nlines"]}, "attributes"),
    ({"attributes": ["red", "\u202egnirts"]}, "attributes"),
    ({"attributes": ["red", "zero\u200bwidth"]}, "attributes"),
    ({"attributes": ["red", "\udc80"]}, "attributes"),
    ({"attributes": [f"word{i}" for i in range(5000)]}, "attributes"),
])
def test_unprintable_or_too_many_concept_words_are_refused_before_registering(admin, res, fields, field):
    r = register_json(admin, **fields)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["error"]["field"] == field
    assert "<wordy>" not in res.registry and res.jobs.count("train") == 0


def test_a_printable_concept_registers(admin, res):
    r = register_json(admin, attributes=["red", "rayé", "深い"])
    try:
        assert r.status_code in (200, 201, 202), r.get_data(as_text=True)
        assert res.registry.get("<wordy>").attributes == ["red", "rayé", "深い"]
    finally:
        res.registry.delete("<wordy>")


def test_a_version_that_is_not_a_version_id_is_a_400(admin, res):
    r = register_json(admin)
    try:
        assert r.status_code in (200, 201, 202)
        for version in ("v0001\ud800", "../v0001", "\ud800"):
            bad = admin.post("/api/concepts/wordy/activate", data=json.dumps({"version": version}),
                             content_type="application/json")
            assert bad.status_code == 400 and "versions look like 'v0001'" in bad.json["error"]["message"], version
        missing = admin.post("/api/concepts/wordy/activate", json={"version": "v0009"})
        assert missing.status_code in (404, 409)
    finally:
        res.registry.delete("<wordy>")


def test_the_registry_refuses_unprintable_words_from_any_caller(tmp_path):
    registry = ConceptRegistry(tmp_path)
    images = [png_bytes(i) for i in range(3)]
    for parent, attributes in (("dress\n", None), ("dress", ["ok", "\u2066x"]), ("\ud800", None)):
        with pytest.raises(ConceptError, match="holds"):
            registry.register("<aurora>", parent, images, attributes=attributes)
    assert registry.list() == [] and not any((tmp_path / "concepts").glob("*/images"))
    registry.register("<aurora>", "dress", images)
    with pytest.raises(ConceptError, match="holds"):
        registry.update("<aurora>", parent="dr\u0000ess")
    with pytest.raises(ConceptError, match="versions look like"):
        registry.version("<aurora>", "\ud800")
