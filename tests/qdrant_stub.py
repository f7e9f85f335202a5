"""A stand-in for a Qdrant cluster's REST API on 127.0.0.1, for the snapshot tests.

qdrant-client's in-memory mode has no snapshots (its create_snapshot raises NotImplementedError),
and Docker cannot run here, so the snapshot code is tested against this stub: one HTTP server per
node, sharing the cluster-wide state (collections, aliases) as a real cluster's consensus does,
each node holding its own snapshot files. It answers only the calls the store and the snapshot
code make, at Qdrant's request paths, with Qdrant's response shapes (qdrant-client parses the
ones it reads with its pydantic models), and records every request so the tests can check the
paths, query parameters, headers and bodies (e.g. the cluster settings in PUT /collections/{name}).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "1.20.1"


@dataclass
class Request:
    node: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Cluster:
    """State shared by the nodes; `peers` is what GET /cluster reports (may differ from the nodes served)."""

    api_key: str | None  # None: no key required
    peers: int = 3
    version: str = VERSION
    collections: dict[str, int] = field(default_factory=dict)  # name -> points
    created: dict[str, dict] = field(default_factory=dict)  # name -> the JSON body that created it
    payload_indexes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> field -> schema
    aliases: dict[str, str] = field(default_factory=dict)
    # name -> point id -> payload, for collections written through the stub (the artifacts collection)
    points: dict[str, dict[str, dict]] = field(default_factory=dict)
    snapshots: list[dict[str, dict[str, bytes]]] = field(default_factory=list)  # per node: collection -> name -> data
    uploads: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def shard_data(self, node: int, collection: str) -> bytes:
        """What node `node` would put in a snapshot of `collection`: its own shards."""
        return json.dumps({"node": node, "collection": collection, "points": self.collections[collection]}).encode()


def _ok(result: Any) -> tuple[int, dict]:
    return 200, {"result": result, "status": "ok", "time": 0.001}


def _error(code: int, message: str) -> tuple[int, dict]:
    return code, {"status": {"error": message}, "time": 0.001}


class _Handler(BaseHTTPRequestHandler):
    cluster: Cluster
    node: int

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        c = self.cluster
        with c.lock:
            c.requests.append(Request(self.node, self.command, url.path, query,
                                      {k.lower(): v for k, v in self.headers.items()}, body))
        if c.api_key is not None and self.headers.get("api-key") != c.api_key:
            self._send(*_error(401, "Must provide an API key or an Authorization bearer token"))
            return
        with c.lock:
            answer = self._route(self.command, url.path, query, body)
        if isinstance(answer, bytes):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        else:
            self._send(*answer)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes):  # noqa: C901 (a routing table)
        c, node = self.cluster, self.node
        if (method, path) == ("GET", "/"):
            return 200, {"title": "qdrant - vector search engine", "version": c.version, "commit": "0" * 40}
        if (method, path) == ("GET", "/cluster"):
            peers = {str(i + 1): {"uri": f"http://qdrant-{i}:6335/"} for i in range(c.peers)}
            return _ok({"status": "enabled", "peer_id": node + 1, "peers": peers,
                        "raft_info": {"term": 1, "commit": 10, "pending_operations": 0, "leader": 1,
                                      "role": "Leader" if node == 0 else "Follower", "is_voter": True},
                        "consensus_thread_status": {"consensus_thread_status": "working", "last_update": "2026"},
                        "message_send_failures": {}})
        if (method, path) == ("GET", "/collections"):
            return _ok({"collections": [{"name": n} for n in sorted(c.collections)]})
        if (method, path) == ("GET", "/aliases"):
            return _ok({"aliases": [{"alias_name": a, "collection_name": t} for a, t in sorted(c.aliases.items())]})
        if (method, path) == ("POST", "/collections/aliases"):
            for action in json.loads(body)["actions"]:
                if "delete_alias" in action:
                    c.aliases.pop(action["delete_alias"]["alias_name"], None)
                if "create_alias" in action:
                    c.aliases[action["create_alias"]["alias_name"]] = action["create_alias"]["collection_name"]
            return _ok(True)
        m = re.fullmatch(r"/collections/([^/]+)(/.*)?", path)
        if not m:
            return _error(404, f"no route {method} {path}")
        name, rest = m.group(1), m.group(2) or ""
        if (method, rest) == ("POST", "/snapshots/upload"):
            return self._upload(name, query, body)
        if (method, rest) == ("PUT", ""):  # create collection
            if name in c.collections or name in c.aliases:
                return _error(400, f"Wrong input: Collection `{name}` already exists!")
            c.created[name] = json.loads(body)
            c.collections[name] = 0
            return _ok(True)
        name = c.aliases.get(name, name)
        if name not in c.collections:
            return _error(404, f"Not found: Collection `{name}` doesn't exist!")
        if (method, rest) == ("PUT", "/index"):  # create payload index
            spec = json.loads(body)
            c.payload_indexes.setdefault(name, {})[spec["field_name"]] = spec["field_schema"]
            return _ok({"operation_id": 1, "status": "completed"})
        if (method, rest) == ("POST", "/points/count"):
            return _ok({"count": c.collections[name]})
        if rest == "" or rest.startswith("/points"):
            return self._points(method, name, rest, body)
        mine = c.snapshots[node].setdefault(name, {})
        if (method, rest) == ("POST", "/snapshots"):
            data = c.shard_data(node, name)
            snap = f"{name}-{node}-2026-11-29-12-00-0{len(mine)}.snapshot"
            mine[snap] = data
            return _ok({"name": snap, "creation_time": "2026-11-29T12:00:00", "size": len(data),
                        "checksum": hashlib.sha256(data).hexdigest()})
        if (method, rest) == ("GET", "/snapshots"):
            return _ok([{"name": n, "creation_time": "2026-11-29T12:00:00", "size": len(d),
                         "checksum": hashlib.sha256(d).hexdigest()} for n, d in sorted(mine.items())])
        s = re.fullmatch(r"/snapshots/([^/]+)", rest)
        if s and s.group(1) in mine:
            if method == "GET":
                return mine[s.group(1)]
            if method == "DELETE":
                del mine[s.group(1)]
                return _ok(True)
        return _error(404, f"Not found: snapshot {rest} of collection `{name}` on node {node}")

    def _points(self, method: str, name: str, rest: str, body: bytes):
        """Collection info, and points kept by id with their payloads (no vectors, no search)."""
        c = self.cluster
        stored = c.points.setdefault(name, {})
        spec = json.loads(body) if body else {}
        if (method, rest) == ("GET", ""):
            size = c.created.get(name, {}).get("vectors", {}).get("size", 1)
            return _ok({"status": "green", "optimizer_status": "ok", "segments_count": 1, "payload_schema": {},
                        "points_count": c.collections[name],
                        "config": {"params": {"vectors": {"size": size, "distance": "Cosine"}},
                                   "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                                   "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
                                   "metadata": c.created.get(name, {}).get("metadata")}})
        done = {"operation_id": 1, "status": "completed"}
        if (method, rest) == ("PUT", "/points"):
            for p in spec["points"]:
                stored[str(p["id"])] = p.get("payload") or {}
            c.collections[name] = len(stored)
            return _ok(done)
        if (method, rest) == ("POST", "/points"):
            return _ok([{"id": i, "payload": stored[i], "vector": None} for i in spec["ids"] if i in stored])
        if (method, rest) == ("POST", "/points/scroll"):
            return _ok({"points": [{"id": i, "payload": None} for i in sorted(stored)], "next_page_offset": None})
        if (method, rest) == ("POST", "/points/delete"):
            for i in spec["points"]:
                stored.pop(i, None)
            c.collections[name] = len(stored)
            return _ok(done)
        return _error(404, f"no route {method} {rest} of collection `{name}`")

    def _upload(self, name: str, query: dict[str, str], body: bytes):
        """Recover from an uploaded snapshot: multipart/form-data with the file in the field `snapshot`."""
        c = self.cluster
        ctype = self.headers.get("Content-Type", "")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        if "snapshot" not in parts:
            return _error(400, "multipart field `snapshot` is missing")
        data = parts["snapshot"].get_payload(decode=True)
        if query.get("checksum") and query["checksum"] != hashlib.sha256(data).hexdigest():
            return _error(400, "Bad request: checksum mismatch")
        shard = json.loads(data)
        c.uploads.append({"node": self.node, "collection": name, "priority": query.get("priority"),
                          "wait": query.get("wait"), "from_node": shard["node"],
                          "filename": parts["snapshot"].get_filename()})
        if query.get("priority") == "snapshot":  # the default, replica, would keep the (empty) local data
            c.collections[name] = shard["points"]
        else:
            c.collections.setdefault(name, 0)
        return _ok(True)


class QdrantStub:
    """`nodes` HTTP servers on free loopback ports sharing one Cluster; use as a context manager."""

    def __init__(self, nodes: int = 3, api_key: str | None = "test-key", peers: int | None = None):
        self.cluster = Cluster(api_key=api_key, peers=nodes if peers is None else peers)
        self.cluster.snapshots = [{} for _ in range(nodes)]
        self._servers = []
        for i in range(nodes):
            handler = type(f"Node{i}", (_Handler,), {"cluster": self.cluster, "node": i})
            self._servers.append(ThreadingHTTPServer(("127.0.0.1", 0), handler))
        self.urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers]
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers]

    def __enter__(self) -> QdrantStub:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def requests(self, method: str | None = None, path_re: str = ".*") -> list[Request]:
        return [r for r in self.cluster.requests
                if (method is None or r.method == method) and re.fullmatch(path_re, r.path)]
