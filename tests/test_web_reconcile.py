"""A kill during a concept registration (issue #27 minor): before the commit it leaves image files with no
concept, after it a registered concept whose training was never queued. The next start reconciles both, and
leaves alone a registration younger than the grace period (it may be in flight in another process)."""
import os
import time

import pytest

from engine.concept_repair import REGISTRATION_GRACE_S
from web import create_app
from web.testing import png_bytes, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def backdate(registry, placeholder: str, seconds: float) -> None:
    from datetime import datetime, timezone

    when = datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat(timespec="seconds")
    with registry.db.write() as conn:
        conn.execute("UPDATE concepts SET created=? WHERE placeholder=?", (when, placeholder))


def test_the_next_start_cleans_up_after_registrations_killed_midway(tmp_path):
    old = time.time() - REGISTRATION_GRACE_S - 60
    app = create_app(tiny_settings(tmp_path))
    try:
        res = app.extensions["coinage"]
        # killed before the commit: the images are on disk, the row is not (one old, one maybe in flight)
        for name, mtime in (("lost", old), ("inflight", None)):
            folder = res.registry.concepts_dir / name / "images"
            folder.mkdir(parents=True)
            (folder / "000.png").write_bytes(png_bytes(0))
            if mtime is not None:
                os.utime(folder.parent, (mtime, mtime))
        # killed after the commit, before asking for training (one old, one just registered)
        for placeholder in ("<stranded>", "<fresh>"):
            res.registry.register(placeholder, "dress", [png_bytes(i) for i in range(3)])
        backdate(res.registry, "<stranded>", REGISTRATION_GRACE_S + 60)
        assert res.jobs.count("train") == 0
    finally:
        app.extensions["coinage"].close()

    app = create_app(tiny_settings(tmp_path))  # the restart
    try:
        res = app.extensions["coinage"]
        concepts = res.registry.concepts_dir
        assert not (concepts / "lost").exists() and (concepts / "inflight" / "images" / "000.png").exists()
        jobs = res.jobs.list(limit=10)
        assert [(j.kind, j.params["placeholder"]) for j in jobs] == [("train", "<stranded>")]
        assert len(res.registry.images("<stranded>")) == 3  # its own folder is not an orphan
    finally:
        app.extensions["coinage"].close()
    app = create_app(tiny_settings(tmp_path))  # a second restart queues nothing more
    try:
        assert app.extensions["coinage"].jobs.count("train") == 1
    finally:
        app.extensions["coinage"].close()
