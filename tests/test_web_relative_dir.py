"""The app as README's `make demo` starts it: the default relative data dir `var`, resolved against the working
directory (not against the web package, where Flask's send_file would look). Every image and download the
concept page and the photo-search page reference is fetched."""
import io
import re
from pathlib import Path

import pytest

from web import create_app
from web.settings import AppSettings, data_dir_from_env
from web.testing import build_catalog, png_bytes, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
PASSWORD = "secret-pw"


def test_a_relative_data_dir_is_made_absolute_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert AppSettings(data_dir=Path("var")).data_dir == tmp_path / "var"
    assert AppSettings.from_env({}).data_dir == tmp_path / "var"  # the default
    assert AppSettings(data_dir="var", catalog="shop/../c.jsonl").catalog == tmp_path / "c.jsonl"
    assert data_dir_from_env({"COINAGE_DATA_DIR": "d"}) == tmp_path / "d"


def _links(html: str) -> list[str]:
    """Every image source and token download a page references (the app's own URLs)."""
    images = re.findall(r'<img[^>]* src="(/[^"]+)"', html)
    downloads = re.findall(r'href="(/[^"]*token[^"]*)"', html)
    return [u.replace("&amp;", "&") for u in images + downloads]


def test_every_image_and_download_is_served_with_a_relative_data_dir(tmp_path, monkeypatch):
    build_catalog(tmp_path / "var")
    monkeypatch.chdir(tmp_path)
    app = create_app(tiny_settings(Path("var"), password=PASSWORD))
    res = app.extensions["coinage"]
    try:
        admin = app.test_client()
        token = admin.get("/api/session").json["csrf_token"]
        assert admin.post("/admin/login", data={"user": "admin", "password": PASSWORD,
                                                "csrf_token": token}).status_code == 303
        photos = [(io.BytesIO(png_bytes(i, colour=(220, 30, 30))), f"p{i}.png") for i in range(3)]
        r = admin.post("/admin/concepts", content_type="multipart/form-data", data={
            "placeholder": "aurora", "parent": "dress", "attributes": "red, striped, dark", "method": "ti+ce+proj",
            "num_vectors": "1", "steps": "2", "images": photos, "csrf_token": admin.get("/api/session").json["csrf_token"]})
        assert r.status_code == 303, r.get_data(as_text=True)
        job = res.make_worker().run_once(["train"])
        assert job.status == "done", job.error

        page = admin.get("/admin/concepts/aurora").get_data(as_text=True)
        urls = _links(page) + ["/api/concepts/aurora/token"]
        assert sum("/images/" in u for u in urls) == 3 and any(u.endswith("samples.png") for u in urls), urls
        assert any("token.safetensors" in u for u in urls), urls
        for url in urls:
            got = admin.get(url)
            assert got.status_code == 200 and got.data, (url, got.status_code)
            got.close()

        shopper = app.test_client()
        r = shopper.post("/search/photo", content_type="multipart/form-data", data={
            "photo": (io.BytesIO(png_bytes(3)), "me.png"), "csrf_token": shopper.get("/api/session").json["csrf_token"]})
        assert r.status_code == 303
        page = shopper.get(r.headers["Location"]).get_data(as_text=True)
        urls = _links(page)
        assert any(u.startswith("/search/photo/") for u in urls) and len(urls) > 6, urls
        for url in urls:
            got = shopper.get(url)
            assert got.status_code == 200 and got.data, (url, got.status_code)
            got.close()
    finally:
        res.close()
