"""Shared fixtures of the reliability suite: one tiny indexed web app per session (helpers: attack_kit.py).

Everything runs on the `tiny-random` backbone in temporary directories, on loopback only
(tests/conftest.py refuses other addresses).
"""
from __future__ import annotations

import pytest

from attack_kit import PASSWORD


@pytest.fixture(scope="module", autouse=True)
def _one_thread_per_module(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    """A tiny catalog indexed into an embedded store: 24 products x 6 photos (web.testing.build_catalog)."""
    from web.testing import build_catalog

    root = tmp_path_factory.mktemp("shop")
    build_catalog(root)
    return root


@pytest.fixture(scope="session")
def app(shop):
    from web import create_app
    from web.testing import tiny_settings

    app = create_app(tiny_settings(shop, password=PASSWORD))
    yield app
    app.extensions["coinage"].close()


@pytest.fixture
def res(app):
    return app.extensions["coinage"]


@pytest.fixture
def client(app):
    return app.test_client()
