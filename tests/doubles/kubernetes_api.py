"""A Kubernetes API server double on 127.0.0.1 that the REAL ``kubernetes`` Python client talks to.

Tests build the client with ``KubernetesConnection(auth="none", server=api.endpoint)`` (or
``api.client()``) and the double answers as the API server does, in its JSON shapes:

* **objects** — ``GET``/``PATCH``/``DELETE`` of namespaced objects under ``/api/v1/...`` and
  ``/apis/<group>/<version>/...`` (core, apps, batch and any custom resource: RayJob, PyTorchJob …),
  the ``scale`` subresource of Deployments and StatefulSets (an ``autoscaling/v1`` ``Scale``), lists
  per namespace and across namespaces with ``labelSelector`` (``k=v``, ``k!=v``, ``k``, ``!k``) and
  ``fieldSelector`` (``status.phase``, ``metadata.name``, ``metadata.namespace``, ``spec.nodeName``),
  paged with ``limit`` and ``continue`` as the API server pages (``metadata.continue`` until the last
  page; a token from another list is ``410 Expired``); a kind listed in ``absent`` (a CRD that is not
  installed) answers ``404 NotFound`` as the API server does for an unknown resource;
* **patch semantics** — ``application/merge-patch+json`` and ``strategic-merge-patch+json`` (objects
  merge, ``null`` deletes, lists are replaced — the subset our objects need) and
  ``application/json-patch+json`` (``add``/``replace``/``remove``); ``dryRun=All`` answers with the
  result and persists nothing; every change bumps the object's and the server's ``resourceVersion``;
* **conflicts** — a patch whose body carries ``metadata.resourceVersion`` other than the current one
  and a delete whose ``preconditions`` do not match are ``409 Conflict`` ``Status`` answers;
* **watch** — ``?watch=true&resourceVersion=N&timeoutSeconds=S`` streams ``ADDED``/``MODIFIED``/
  ``DELETED`` events after ``N`` as newline-delimited JSON, waiting (on a condition, not a sleep) for
  new ones until the timeout; an expired ``resourceVersion`` gets the ``410 Gone`` ERROR event;
* **controllers** — a Job or KubeRay/Kubeflow job whose suspend flag turns on loses its pods (they are
  deleted, as the real controllers do) and gains the ``Suspended`` condition; a Deployment or
  StatefulSet scaled down loses its surplus pods;
* **RBAC** — with ``allow`` set (``{"batch/jobs:patch", "pods:get", ...}``), any other request is a
  ``403 Forbidden`` naming the verb and resource, as the API server's authorizer words it; a
  ``SelfSubjectAccessReview`` (``POST``) answers from the same set whether a request would be allowed.

Every request is recorded (``requests``); ``fail(method, path_prefix, status, times)`` injects errors.
Factories (``deployment``, ``job``, ``pod``, ``node``, ``ray_job``, ``pytorch_job`` …) build objects the
client's models accept (required fields present).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

CORE_PLURALS = {"pods": "Pod", "nodes": "Node", "namespaces": "Namespace"}
GROUP_KINDS = {
    ("apps", "deployments"): "Deployment",
    ("apps", "statefulsets"): "StatefulSet",
    ("batch", "jobs"): "Job",
    ("batch", "cronjobs"): "CronJob",
    ("ray.io", "rayjobs"): "RayJob",
    ("ray.io", "rayclusters"): "RayCluster",
    ("kubeflow.org", "pytorchjobs"): "PyTorchJob",
    ("kubeflow.org", "tfjobs"): "TFJob",
}
CLUSTER_SCOPED = {"nodes", "namespaces"}
VERSIONS = {"": "v1", "apps": "v1", "batch": "v1", "ray.io": "v1", "kubeflow.org": "v1"}


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}  # fmt: skip


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass
class Event:
    version: int
    type: str
    group: str
    plural: str
    namespace: str | None
    obj: dict[str, Any]


@dataclass
class _Fault:
    method: str
    prefix: str
    status: int
    times: int


@dataclass
class Target:
    group: str
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None


class KubernetesApi:
    """The server: objects, events, faults, an optional RBAC allow-list. Start with ``start()``."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.events: list[Event] = []
        self.version = 1000
        self.oldest_watchable = 0
        self.requests: list[Recorded] = []
        self.faults: list[_Fault] = []
        self.allow: set[str] | None = None
        self.absent: set[tuple[str, str]] = set()  # (group, plural) whose CRD is not installed
        self.changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> KubernetesApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                api._serve(self, "GET")

            def do_PATCH(self) -> None:
                api._serve(self, "PATCH")

            def do_DELETE(self) -> None:
                api._serve(self, "DELETE")

            def do_POST(self) -> None:
                api._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def client(self) -> Any:
        from spendwatch.k8s_client import KubernetesConnection, api_client

        return api_client(KubernetesConnection(auth="none", server=self.endpoint))

    # -- test helpers --------------------------------------------------------------------------------

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        group, _, _version = obj["apiVersion"].rpartition("/")
        plural = _plural(group, obj["kind"])
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-11-20T08:00:00Z")
        namespace = None if plural in CLUSTER_SCOPED else meta.setdefault("namespace", "default")
        with self.changed:
            self._store(group, plural, namespace, obj, "ADDED")
        return obj

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self.objects.get((group, plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def fail(self, method: str, prefix: str, status: int, times: int = 1) -> None:
        self.faults.append(_Fault(method, prefix, status, times))

    def calls(self, method: str, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def touch(self, group: str, plural: str, namespace: str | None, name: str, change: dict[str, Any]) -> None:
        """Someone else changes an object (a new resourceVersion): the next conflict-checked patch fails."""
        with self.changed:
            current = self.objects[(group, plural, namespace, name)]
            self._store(group, plural, namespace, _merge(copy.deepcopy(current), change), "MODIFIED")

    # -- storage and events -------------------------------------------------------------------------

    def _store(self, group: str, plural: str, namespace: str | None, obj: dict[str, Any], kind: str) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        key = (group, plural, namespace, obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(Event(self.version, kind, group, plural, namespace, copy.deepcopy(obj)))
        self.changed.notify_all()

    # -- serving ------------------------------------------------------------------------------------

    def _serve(self, http: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(http.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        content_type = http.headers.get("Content-Type")
        self.requests.append(Recorded(method, parts.path, query, content_type, body))
        try:
            self._fault(method, parts.path)
            target = _parse(parts.path)
            if method == "POST" and target.plural == "selfsubjectaccessreviews":
                _write(http, 201, self._review(body or {}))
                return
            if (target.group, target.plural) in self.absent:
                raise KubeError(404, "NotFound", "the server could not find the requested resource")
            self._authorize(method, target, query)
            if method == "GET" and str(query.get("watch")).lower() in ("true", "1"):
                self._watch(http, target, query)
                return
            answer = self._answer(method, target, query, body, content_type)
            _write(http, 200, answer)
        except KubeError as exc:
            _write(http, exc.code, exc.status())

    def _review(self, body: dict[str, Any]) -> dict[str, Any]:
        """A SelfSubjectAccessReview answered from ``allow`` (any identity may ask one)."""
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attributes.get("resource", "") + (
            f"/{attributes['subresource']}" if attributes.get("subresource") else ""
        )
        group = attributes.get("group") or ""
        rule = f"{group}/{resource}:{attributes.get('verb')}" if group else f"{resource}:{attributes.get('verb')}"
        allowed = self.allow is None or rule in self.allow
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = "no RBAC policy matched"
        return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {},
                "spec": body.get("spec") or {}, "status": status}  # fmt: skip

    def _fault(self, method: str, path: str) -> None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and path.startswith(fault.prefix):
                fault.times -= 1
                raise KubeError(fault.status, "InternalError" if fault.status >= 500 else "Forbidden", "injected fault")

    def _authorize(self, method: str, target: Target, query: dict[str, str]) -> None:
        if self.allow is None:
            return
        verb = {"PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            verb = "watch" if str(query.get("watch")).lower() in ("true", "1") else ("get" if target.name else "list")
        resource = target.plural + (f"/{target.sub}" if target.sub else "")
        rule = f"{target.group}/{resource}:{verb}" if target.group else f"{resource}:{verb}"
        if rule not in self.allow:
            where = f' in the namespace "{target.namespace}"' if target.namespace else " at the cluster scope"
            raise KubeError(
                403,
                "Forbidden",
                f'{target.plural} is forbidden: User "system:serviceaccount:spendwatch:spendwatch" cannot {verb} '
                f'resource "{resource}" in API group "{target.group}"{where}',
            )

    def _answer(
        self, method: str, target: Target, query: dict[str, str], body: Any, content_type: str | None
    ) -> dict[str, Any]:
        if target.name is None:
            if method != "GET":
                raise KubeError(405, "MethodNotAllowed", f"{method} on a collection is not supported here")
            return self._list(target, query)
        key = (target.group, target.plural, target.namespace, target.name)
        with self.changed:
            current = self.objects.get(key)
            if current is None:
                raise KubeError(404, "NotFound", f'{target.plural}.{target.group} "{target.name}" not found')
            if method == "GET":
                return _scale(current) if target.sub == "scale" else copy.deepcopy(current)
            dry = query.get("dryRun") == "All"
            if method == "DELETE":
                return self._delete(target, current, body or {}, dry)
            return self._patch(target, current, body, content_type or "", dry)

    def _patch(
        self, target: Target, current: dict[str, Any], body: Any, content_type: str, dry: bool
    ) -> dict[str, Any]:
        wanted = None
        if isinstance(body, dict):
            wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and str(wanted) != current["metadata"]["resourceVersion"]:
            raise KubeError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {target.plural}.{target.group} "{target.name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
            )
        updated = copy.deepcopy(current)
        if target.sub == "scale":
            replicas = ((body or {}).get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise KubeError(422, "Invalid", "spec.replicas: Invalid value: must be a non-negative integer")
            updated.setdefault("spec", {})["replicas"] = replicas
        elif "json-patch" in content_type:
            updated = _json_patch(updated, body)
        elif "merge-patch" in content_type:
            patch = copy.deepcopy(body)
            (patch.get("metadata") or {}).pop("resourceVersion", None)
            updated = _merge(updated, patch)
        else:
            raise KubeError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        if dry:
            return _scale(updated) if target.sub == "scale" else updated
        self._store(target.group, target.plural, target.namespace, updated, "MODIFIED")
        self._controllers(target, current, updated)
        stored = self.objects[(target.group, target.plural, target.namespace, updated["metadata"]["name"])]
        return _scale(stored) if target.sub == "scale" else copy.deepcopy(stored)

    def _delete(self, target: Target, current: dict[str, Any], body: dict[str, Any], dry: bool) -> dict[str, Any]:
        pre = body.get("preconditions") or {}
        meta = current["metadata"]
        if (pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]) or (
            pre.get("uid") and pre["uid"] != meta["uid"]
        ):
            raise KubeError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {target.plural} "{target.name}": precondition failed',
            )
        if not dry:
            self._store(target.group, target.plural, target.namespace, copy.deepcopy(current), "DELETED")
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": target.name, "kind": target.plural, "uid": meta["uid"]}}  # fmt: skip

    def _list(self, target: Target, query: dict[str, str]) -> dict[str, Any]:
        with self.changed:
            items = [
                obj
                for (group, plural, namespace, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                if group == target.group and plural == target.plural
                and (target.namespace is None or namespace == target.namespace)
                and _selected(obj, query)
            ]  # fmt: skip
            version = str(self.version)
        meta: dict[str, Any] = {"resourceVersion": version}
        limit = int(query.get("limit") or 0)
        if limit > 0:
            start = 0
            if query.get("continue"):
                where, _, offset = query["continue"].partition(":")
                if where != f"{target.group}/{target.plural}" or not offset.isdigit():
                    raise KubeError(410, "Expired", "The provided continue parameter is too old or malformed")
                start = int(offset)
            items, rest = items[start : start + limit], items[start + limit :]
            if rest:
                meta["continue"] = f"{target.group}/{target.plural}:{start + limit}"
                meta["remainingItemCount"] = len(rest)
        with self.changed:
            items = [copy.deepcopy(obj) for obj in items]  # only the page's, as the server serialises it
        kind = CORE_PLURALS.get(target.plural) or GROUP_KINDS.get((target.group, target.plural), "Object")
        api_version = VERSIONS.get(target.group, "v1")
        return {
            "kind": f"{kind}List",
            "apiVersion": f"{target.group}/{api_version}" if target.group else api_version,
            "metadata": meta,
            "items": items,
        }

    def _watch(self, http: BaseHTTPRequestHandler, target: Target, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or self.version)
        timeout = float(query.get("timeoutSeconds") or 30)
        http.send_response(200)
        http.send_header("Content-Type", "application/json")
        http.send_header("Transfer-Encoding", "chunked")
        http.end_headers()

        def send(event: dict[str, Any]) -> None:
            data = (json.dumps(event) + "\n").encode()
            http.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            http.wfile.flush()

        if since < self.oldest_watchable:
            send({"type": "ERROR", "object": KubeError(410, "Expired", f"too old resource version: {since}").status()})
        else:
            deadline = threading.Event()
            timer = threading.Timer(timeout, lambda: (deadline.set(), self._wake()))
            timer.start()
            try:
                while not deadline.is_set():
                    with self.changed:
                        pending = [
                            e for e in self.events
                            if e.version > since and e.group == target.group and e.plural == target.plural
                            and (target.namespace is None or e.namespace == target.namespace)
                            and _selected(e.obj, query)
                        ]  # fmt: skip
                        if not pending:
                            self.changed.wait()
                            continue
                    for event in pending:
                        send({"type": event.type, "object": event.obj})
                        since = event.version
            finally:
                timer.cancel()
        http.wfile.write(b"0\r\n\r\n")
        http.wfile.flush()

    def _wake(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- what the controllers do ----------------------------------------------------------------------

    def _controllers(self, target: Target, before: dict[str, Any], after: dict[str, Any]) -> None:
        name = after["metadata"]["name"]
        namespace = target.namespace
        if target.sub == "scale":
            replicas = after["spec"]["replicas"]
            owned = self._pods(namespace, lambda p: _owned_by(p, name))
            for pod in owned[replicas:]:
                self._store("", "pods", namespace, pod, "DELETED")
            return
        if _suspended(before) or not _suspended(after):
            if _suspended(before) and not _suspended(after):
                status = after.setdefault("status", {})
                status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
                self._store(target.group, target.plural, namespace, after, "MODIFIED")
            return
        for pod in self._pods(namespace, lambda p: _owned_by(p, name)):
            self._store("", "pods", namespace, pod, "DELETED")
        status = after.setdefault("status", {})
        if target.plural == "jobs":
            status["active"] = 0
        condition = {"type": "Suspended", "status": "True", "reason": "JobSuspended",
                     "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        status["conditions"] = [*(status.get("conditions") or []), condition]
        self._store(target.group, target.plural, namespace, after, "MODIFIED")

    def _pods(self, namespace: str | None, wanted: Any) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (group, plural, ns, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
            if group == "" and plural == "pods" and ns == namespace and wanted(obj)
        ]


# -- helpers --------------------------------------------------------------------------------------------


def _plural(group: str, kind: str) -> str:
    for (g, plural), k in GROUP_KINDS.items():
        if g == group and k == kind:
            return plural
    for plural, k in CORE_PLURALS.items():
        if k == kind and not group:
            return plural
    raise ValueError(f"unknown kind {group}/{kind}")


def _parse(path: str) -> Target:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts and parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        raise KubeError(404, "NotFound", f"the server could not find the requested resource ({path})")
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        raise KubeError(404, "NotFound", f"the server could not find the requested resource ({path})")
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    return Target(group, plural, namespace, name, sub)


def _selected(obj: dict[str, Any], query: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (query.get("labelSelector") or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (query.get("fieldSelector") or "").split(",")):
        negate = "!=" in term
        key, value = term.split("!=" if negate else "=", 1)
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if (str(node) == value) == negate:
            return False
    return True


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = _merge(base.get(key), value)
    return base


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        node = doc
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if op["op"] in ("add", "replace"):
            node[keys[-1]] = op["value"]
        elif op["op"] == "remove":
            node.pop(keys[-1], None)
        else:
            raise KubeError(422, "Invalid", f"unsupported json-patch op {op['op']!r}")
    return doc


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas},
    }


def _suspended(obj: dict[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    return bool(spec.get("suspend") or (spec.get("runPolicy") or {}).get("suspend"))


def _owned_by(pod: dict[str, Any], name: str) -> bool:
    return any(ref.get("name") == name for ref in pod["metadata"].get("ownerReferences") or [])


def _write(http: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    http.send_response(status)
    http.send_header("Content-Type", "application/json")
    http.send_header("Content-Length", str(len(data)))
    http.end_headers()
    http.wfile.write(data)


# -- factories ------------------------------------------------------------------------------------------


_OWNER_API = {"Job": "batch/v1", "CronJob": "batch/v1", "RayJob": "ray.io/v1", "RayCluster": "ray.io/v1",
              "PyTorchJob": "kubeflow.org/v1", "TFJob": "kubeflow.org/v1"}  # fmt: skip


def _owner_ref(kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": _OWNER_API.get(kind, "apps/v1"), "kind": kind, "name": name, "uid": str(uuid.uuid4()),
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def _container(gpus: int = 0, cpu: str = "1", memory: str = "2Gi") -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
    return {"name": "main", "image": "registry.example.com/train:1", "resources": {"requests": requests,
            "limits": {"nvidia.com/gpu": str(gpus)} if gpus else {}}}  # fmt: skip


def _template(labels: dict[str, str], gpus: int = 0, cpu: str = "1", memory: str = "2Gi") -> dict[str, Any]:
    return {"metadata": {"labels": dict(labels)},
            "spec": {"containers": [_container(gpus, cpu, memory)], "restartPolicy": "Never"}}  # fmt: skip


def deployment(namespace: str, name: str, replicas: int = 2, labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name, **(labels or {})}
    template = _template(labels)
    template["spec"]["restartPolicy"] = "Always"
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template},
            "status": {"replicas": replicas}}  # fmt: skip


def statefulset(namespace: str, name: str, replicas: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    obj = deployment(namespace, name, replicas, labels)
    obj["kind"] = "StatefulSet"
    obj["spec"]["serviceName"] = name
    return obj


def job(
    namespace: str, name: str, *, gpus: int = 0, parallelism: int = 1, labels: dict[str, str] | None = None,
    start: str = "2026-11-23T09:00:00Z", deadline: int | None = None, cronjob: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    labels = dict(labels or {})
    obj = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": start},
           "spec": {"parallelism": parallelism, "suspend": False,
                    "template": _template({**labels, "job-name": name}, gpus, cpu="8", memory="64Gi")},
           "status": {"active": parallelism, "startTime": start}}  # fmt: skip
    if deadline is not None:
        obj["spec"]["activeDeadlineSeconds"] = deadline  # type: ignore[index]
    if cronjob is not None:
        obj["metadata"]["ownerReferences"] = [_owner_ref("CronJob", cronjob)]  # type: ignore[index]
    return obj


def cronjob(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"schedule": "0 2 * * *", "suspend": False,
                     "jobTemplate": {"spec": {"template": _template(dict(labels or {}))}}}}  # fmt: skip


def ray_job(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"entrypoint": "python train.py", "suspend": False, "shutdownAfterJobFinishes": True},
            "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}  # fmt: skip


def ray_cluster(
    namespace: str, name: str, labels: dict[str, str] | None = None, *, owner: str | None = None,
    start: str = "2026-11-23T09:00:00Z",
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                            "creationTimestamp": start}  # fmt: skip
    if owner is not None:  # created by a RayJob
        meta["ownerReferences"] = [_owner_ref("RayJob", owner)]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta,
            "spec": {"headGroupSpec": {"rayStartParams": {}}, "workerGroupSpecs": []},
            "status": {"state": "ready"}}  # fmt: skip


def pytorch_job(
    namespace: str, name: str, labels: dict[str, str] | None = None, kind: str = "PyTorchJob"
) -> dict[str, Any]:
    replica = "Master" if kind == "PyTorchJob" else "Chief"
    return {"apiVersion": "kubeflow.org/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {"runPolicy": {"suspend": False},
                     f"{'pytorch' if kind == 'PyTorchJob' else 'tf'}ReplicaSpecs": {replica: {"replicas": 1}}},
            "status": {"conditions": [{"type": "Running", "status": "True"}]}}  # fmt: skip


def pod(
    namespace: str, name: str, *, owner: tuple[str, str] | None = None, gpus: int = 0, node: str | None = None,
    labels: dict[str, str] | None = None, phase: str = "Running", start: str = "2026-11-23T09:00:00Z",
    cpu: str = "1", memory: str = "2Gi",
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels or {}),
        "creationTimestamp": start,
    }
    if owner is not None:
        meta["ownerReferences"] = [_owner_ref(*owner)]
    spec: dict[str, Any] = {"containers": [_container(gpus, cpu, memory)]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase, "startTime": start}}  # fmt: skip


def node(name: str, instance_type: str, *, gpus: int = 0, cpu: str = "96", memory: str = "1152Gi",
         zone: str = "us-west-2a", labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    capacity = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": instance_type,
                                                  "topology.kubernetes.io/zone": zone, **(labels or {})}},
            "status": {"capacity": capacity, "allocatable": capacity}}  # fmt: skip


@pytest.fixture
def kube_api() -> Iterator[KubernetesApi]:
    api = KubernetesApi().start()
    try:
        yield api
    finally:
        with api.changed:
            api.changed.notify_all()
        api.stop()


__all__ = ["KubeError", "KubernetesApi", "kube_api"]
