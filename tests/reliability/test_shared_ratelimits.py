"""Rate limits shared by two web processes through one `COINAGE_RATELIMIT_STORAGE=redis://...`.

No Redis server runs here: fakeredis's TCP server (with Lua, which the `limits` library's moving window needs)
speaks the Redis protocol on 127.0.0.1, and both processes reach it through the real `redis` client, exactly as
production reaches a real Redis. One process is a child Python running its own app on its own data folder; the
other is this test's app. The control run with `memory://` shows the counts are not shared without the storage.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from shared_ratelimit_app import SEARCHER, make_app, one_of_each

ROOT = Path(__file__).resolve().parents[2]

# The other process: its own catalog and app on the same storage; one request of each kind, codes printed as JSON.
CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from shared_ratelimit_app import SEARCHER, make_app, one_of_each
app = make_app(Path(sys.argv[1]), sys.argv[2])
print(json.dumps(one_of_each(app.test_client(), 0)))
app.extensions["coinage"].close()
"""


@pytest.fixture
def redis_url():
    fakeredis = pytest.importorskip("fakeredis", reason="pip install 'coinage[dev]' (fakeredis[lua])")
    server = fakeredis.TcpFakeServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_other_process(root: Path, storage: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent)), str(root), storage],
                         capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_two_processes_on_one_redis_share_every_rate_limit(tmp_path, redis_url, storage):
    uri = redis_url if storage == "redis" else "memory://"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    other = run_other_process(tmp_path / "a", uri)
    # the other process spent one of each client's allowance: 1 of 3 searches, 1 of 2 previews, clicks, logins
    assert other == {"search": 200, "preview": "queued", "click": 404, "login": 401}
    app = make_app(tmp_path / "b", uri)
    try:
        client = app.test_client()
        mine = [one_of_each(client, n) for n in (1, 2)]
        here = {k: [m[k] for m in mine] for k in ("search", "preview", "click", "login")}
        here["search"].append(client.get("/api/search?q=red+dress&preview=0",
                                         environ_base={"REMOTE_ADDR": SEARCHER}).status_code)  # a 4th in all
    finally:
        app.extensions["coinage"].close()
    if storage == "redis":  # one count across both processes: the allowance ends one request sooner here
        assert here == {"search": [200, 200, 429], "preview": ["queued", "unavailable"], "click": [404, 429],
                        "login": [401, 429]}
    else:  # control: memory:// counts per process, so this process still has its whole allowance
        assert here == {"search": [200, 200, 200], "preview": ["queued", "queued"], "click": [404, 404],
                        "login": [401, 401]}
