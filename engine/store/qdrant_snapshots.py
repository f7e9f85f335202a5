"""Collection snapshots on a Qdrant server or cluster, over Qdrant's REST API (httpx, streamed).

In distributed mode a collection snapshot holds only the shards stored on the node that made
it, so a backup is one snapshot per node, each restored on the node of the same position
(Qdrant's "Snapshots" guide, distributed deployment). The calls, as in qdrant-client's
generated `snapshots_api` (qdrant_client/http/api/snapshots_api.py):

    POST   /collections/{c}/snapshots?wait=true                      create on this node
    GET    /collections/{c}/snapshots                                list this node's
    GET    /collections/{c}/snapshots/{name}                         download (a tar file)
    DELETE /collections/{c}/snapshots/{name}?wait=true               delete on this node
    POST   /collections/{c}/snapshots/upload?wait=true&priority=snapshot&checksum=...
                                                                     restore this node's shards (multipart field `snapshot`)
    GET    /cluster, GET /                                           peers, server version

qdrant-client is not used for these because it can neither stream a download nor an upload
(its snapshot download returns the whole file in memory) and a snapshot is the size of the data.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from engine.store.base import CollectionNotFound, StoreError, StoreUnavailable

_CHUNK = 1 << 20


class QdrantNodes:
    """Every node of one Qdrant deployment, by REST URL (index = the node's position in backups)."""

    def __init__(self, urls: Sequence[str], api_key: str | None, timeout_s: float):
        if not urls:
            raise ValueError("QdrantNodes needs at least one node URL; set COINAGE_QDRANT_NODES or COINAGE_QDRANT_URL")
        self.urls = [u.rstrip("/") for u in urls]
        headers = {"api-key": api_key} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))

    def close(self) -> None:
        self._http.close()

    # --- plumbing ----------------------------------------------------------------------

    def _request(self, node: int, method: str, path: str, what: str, collection: str | None = None,
                 **kwargs: Any) -> httpx.Response:
        url = self.urls[node] + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise StoreUnavailable(
                f"Qdrant node {self.urls[node]} did not answer ({what}): {e}; check that the node runs and that "
                "COINAGE_QDRANT_NODES lists every node's REST URL (http://host:6333)"
            ) from e
        self._check(response, node, what, collection)
        return response

    def _check(self, response: httpx.Response, node: int, what: str, collection: str | None) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("status", {}).get("error") or response.text
        except ValueError:
            detail = response.text
        if response.status_code == 404 and collection is not None:  # callers pass it where 404 = no collection
            raise CollectionNotFound(collection)
        if response.status_code in (401, 403):
            raise StoreError(f"Qdrant node {self.urls[node]} refused the API key ({what}); "
                             "set COINAGE_QDRANT_API_KEY to the cluster's key")
        raise StoreError(f"{what} failed on Qdrant node {self.urls[node]} (HTTP {response.status_code}): {detail}")

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        return response.json()["result"]

    # --- cluster -----------------------------------------------------------------------

    def version(self) -> str:
        """The server version of node 0 (snapshots restore only into the same minor version)."""
        return str(self._request(0, "GET", "/", "read the server version").json().get("version", ""))

    def check_all_listed(self) -> None:
        """Refuse when the cluster has more peers than nodes listed: a backup would miss shards."""
        info = self._result(self._request(0, "GET", "/cluster", "read the cluster status"))
        peers = len(info.get("peers") or {}) if info.get("status") == "enabled" else 1
        if peers != len(self.urls):
            raise StoreError(
                f"the Qdrant deployment at {self.urls[0]} has {peers} node(s) but {len(self.urls)} URL(s) are "
                f"listed ({', '.join(self.urls)}); each node snapshots only its own shards, so list every node's "
                "REST URL in COINAGE_QDRANT_NODES (comma-separated, in a fixed order) or pass --node once per node"
            )

    # --- snapshots ---------------------------------------------------------------------

    def create(self, node: int, collection: str) -> dict[str, Any]:
        """Snapshot `collection` on one node; Qdrant's description {name, size, checksum?, creation_time}."""
        response = self._request(node, "POST", f"/collections/{collection}/snapshots", "create a snapshot",
                                 collection, params={"wait": "true"})
        return dict(self._result(response))

    def list(self, node: int, collection: str) -> list[dict[str, Any]]:
        response = self._request(node, "GET", f"/collections/{collection}/snapshots", "list snapshots", collection)
        return [dict(d) for d in self._result(response)]

    def delete(self, node: int, collection: str, name: str) -> None:
        self._request(node, "DELETE", f"/collections/{collection}/snapshots/{name}", f"delete snapshot {name}",
                      None, params={"wait": "true"})

    def download(self, node: int, collection: str, name: str, dest: Path) -> tuple[str, int]:
        """Stream a node's snapshot into `dest`; (sha256 hex, size in bytes)."""
        url = f"{self.urls[node]}/collections/{collection}/snapshots/{name}"
        digest, size = hashlib.sha256(), 0
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response, node, f"download snapshot {name}", None)
                with open(dest, "wb") as f:
                    for chunk in response.iter_bytes(_CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
        except httpx.HTTPError as e:
            raise StoreUnavailable(f"downloading snapshot {name} from Qdrant node {self.urls[node]} failed: {e}; "
                                   "run `coinage snapshot create` again") from e
        return digest.hexdigest(), size

    def upload(self, node: int, collection: str, path: Path, sha256: str) -> None:
        """Restore this node's shards of `collection` from a snapshot file (streamed multipart upload).

        priority=snapshot: the snapshot's data wins over what the node holds (Qdrant's default,
        `replica`, would keep an empty new collection empty). Qdrant checks the checksum."""
        with open(path, "rb") as f:
            self._request(node, "POST", f"/collections/{collection}/snapshots/upload", f"restore snapshot {path.name}",
                          None, params={"wait": "true", "priority": "snapshot", "checksum": sha256},
                          files={"snapshot": (path.name, f, "application/octet-stream")})
