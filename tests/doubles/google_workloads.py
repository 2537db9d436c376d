"""Vertex AI customJobs and Dataproc clusters/batches list APIs (v1 REST) on the fake Google server.

``FakeVertex``: ``GET /v1/projects/{p}/locations/{r}/customJobs`` with ``filter`` (``state="…" OR …``,
``update_time>"…"``), pageSize/pageToken. ``FakeDataproc``: ``GET /v1/projects/{p}/regions/{r}/clusters``
(filter ``status.state = ACTIVE``) and ``GET /v1/projects/{p}/locations/{r}/batches`` (filter
``state = RUNNING`` / ``create_time > "…"``). Resources are stored in their REST JSON shape, so the real
clients parse them exactly as they parse Google's answers. The kill-switch tests can register
``:cancel`` / ``:stop`` routes on the same server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from tests.doubles.google import ApiRequest, GoogleApiServer
from tests.doubles.google_billing import page_items

_CLUSTER_ACTIVE = {"CREATING", "RUNNING", "UPDATING", "REPAIRING", "STARTING", "ERROR_DUE_TO_UPDATE"}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FakeVertex:
    def __init__(self, server: GoogleApiServer) -> None:
        self.jobs: list[dict[str, Any]] = []
        server.add_route("GET", "/v1/projects/{project}/locations/{region}/customJobs", self._list)

    def _list(self, request: ApiRequest) -> dict[str, Any]:
        p = request.params
        prefix = f"projects/{p['project']}/locations/{p['region']}/"
        jobs = [j for j in self.jobs if j["name"].startswith(prefix)]
        query = request.query.get("filter", "")
        states = re.findall(r'state="(\w+)"', query)
        if states:
            jobs = [j for j in jobs if j["state"] in states]
        after = re.search(r'update_time>"([^"]+)"', query)
        if after:
            jobs = [j for j in jobs if _when(j["updateTime"]) > _when(after[1])]
        return page_items(jobs, request, "customJobs")


class FakeDataproc:
    def __init__(self, server: GoogleApiServer) -> None:
        self.clusters: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        server.add_route("GET", "/v1/projects/{project}/regions/{region}/clusters", self._clusters)
        server.add_route("GET", "/v1/projects/{project}/locations/{region}/batches", self._batches)

    def _clusters(self, request: ApiRequest) -> dict[str, Any]:
        p = request.params
        clusters = [c for c in self.clusters if c["projectId"] == p["project"] and c.get("_region") == p["region"]]
        if "ACTIVE" in request.query.get("filter", ""):
            clusters = [c for c in clusters if c["status"]["state"] in _CLUSTER_ACTIVE]
        return page_items(
            [{k: v for k, v in c.items() if not k.startswith("_")} for c in clusters], request, "clusters"
        )

    def _batches(self, request: ApiRequest) -> dict[str, Any]:
        p = request.params
        prefix = f"projects/{p['project']}/locations/{p['region']}/"
        batches = [b for b in self.batches if b["name"].startswith(prefix)]
        query = request.query.get("filter", "")
        state = re.search(r"state = (\w+)", query)
        if state:
            batches = [b for b in batches if b["state"] == state[1]]
        after = re.search(r'create_time > "([^"]+)"', query)
        if after:
            batches = [b for b in batches if _when(b["createTime"]) > _when(after[1])]
        return page_items(batches, request, "batches")
