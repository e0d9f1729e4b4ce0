"""A Kubernetes API for the operator's tests: kmock's emulator, plus what kopf relies on.

kmock's ``KubernetesEmulator`` stores objects and serves list, watch, fetch, create and merge or
JSON patches (a patch of ``deployments/NAME/scale`` or ``.../status`` lands in the stored object).
What a real API server does and it does not, which kopf or the operator notices:

- a new ``metadata.resourceVersion`` on every write: without it kopf takes each watch event for a
  replay of the previous one, and its finalizer JSON-patch tests a version that never moves;
- a name for an object created with only ``metadata.generateName`` (kopf's Events): without it
  every Event after the first is a 409 conflict;
- 422 for a JSON patch whose ``test`` fails (a stale resourceVersion): kmock answers 500, which
  kopf retries with the same stale patch for a minute, instead of waiting for the next event;
- a ``scale`` subresource that is a ``Scale`` (with ``status.selector``, the pods' label selector
  as a string), not the whole Deployment;
- lists filtered by ``labelSelector`` (equality terms: ``k=v``, ``k==v``, ``k!=v``).
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import yaml

_VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
_versions = itertools.count(1000)


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with a new resourceVersion per write and generated names."""

    async def _handle(self, request: kmock.Request) -> Any:
        # In place: kmock routes a request by its identity (it must be the one it recorded).
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            _version(request.action, request.data)
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as e:  # kmock answers 500, and kopf retries the same patch
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from None

    async def _serve_list(self, request: kmock.Request) -> Any:
        listed = await super()._serve_list(request)
        terms = [term for term in request.params.get("labelSelector", "").split(",") if term]
        listed["items"] = [item for item in listed["items"] if _selected(item, terms)]
        return listed

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        return _as_scale(request, await super()._serve_fetch(request))

    async def _serve_update(self, request: kmock.Request) -> Any:
        return _as_scale(request, await super()._serve_update(request))


def _selected(item: Mapping[str, Any], terms: list[str]) -> bool:
    labels = item.get("metadata", {}).get("labels") or {}
    for term in terms:
        if "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key) != value:
                return False
        else:  # set-based terms ("k in (a,b)", "!k") are not emulated: fail the test, not the filter
            raise ValueError(f"labelSelector term {term!r} is not emulated")
    return True


def _as_scale(request: kmock.Request, body: Mapping[str, Any]) -> Any:
    """The ``scale`` subresource of a Deployment as a real API server shows it."""
    if request.subresource != "scale":
        return body
    metadata = body["metadata"]
    labels = body["spec"]["selector"].get("matchLabels", {})
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {key: metadata[key] for key in ("name", "namespace", "resourceVersion") if key in metadata},
            "spec": {"replicas": body["spec"]["replicas"]},
            "status": {"replicas": body.get("status", {}).get("replicas", 0),
                       "selector": ",".join(f"{key}={value}" for key, value in labels.items())}}


def _version(action: kmock.action, data: Any) -> None:
    """Give a create's body or a patch a new resourceVersion (and a create a name, uid, time)."""
    version = str(next(_versions))
    if isinstance(data, list):  # a JSON patch
        data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
    if not isinstance(data, dict):
        return
    metadata = data.setdefault("metadata", {})
    metadata["resourceVersion"] = version
    if action == kmock.action.CREATE:
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = f"{metadata['generateName']}{uuid.uuid4().hex[:5]}"
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", now_rfc3339())


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register_core(emulator: kmock.KubernetesEmulator) -> None:
    """The built-in resources the operator and kopf use; kopf skips any without list/watch/patch."""
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", singular="namespace", namespaced=False, verbs=_VERBS)
    emulator.resources["v1/secrets"] = kmock.ResourceInfo(
        kind="Secret", singular="secret", namespaced=True, verbs=_VERBS)
    emulator.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", singular="event", namespaced=True, verbs=_VERBS)
    emulator.resources["v1/pods"] = kmock.ResourceInfo(
        kind="Pod", singular="pod", namespaced=True, verbs=_VERBS)
    emulator.resources["apps/v1/deployments"] = kmock.ResourceInfo(
        kind="Deployment", singular="deployment", namespaced=True, verbs=_VERBS,
        subresources={"scale", "status"})


def register_crd(emulator: kmock.KubernetesEmulator, crd_file: Path) -> str:
    """Serve the custom resource a CRD file defines (its first version); its ``group/version/plural``."""
    crd = yaml.safe_load(crd_file.read_text())
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    key = f"{crd['spec']['group']}/{version['name']}/{names['plural']}"
    emulator.resources[key] = kmock.ResourceInfo(
        kind=names["kind"], singular=names["singular"], shortnames=names.get("shortNames", ()),
        namespaced=crd["spec"]["scope"] == "Namespaced", verbs=_VERBS,
        subresources=set(version.get("subresources", {})))
    return key


def seed(emulator: kmock.KubernetesEmulator, resource: str, body: Mapping[str, Any]) -> None:
    """Store ``body`` as it would come back from a real API server (no watch event is sent)."""
    body = copy.deepcopy(dict(body))
    _version(kmock.action.CREATE, body)
    metadata = body["metadata"]
    emulator.objects[resource, metadata.get("namespace"), metadata["name"]] = body


def operator_requests(emulator: kmock.KubernetesEmulator) -> list[kmock.Request]:
    """What the operator (kopf or the ``kubernetes`` client) asked: every request the emulator
    received but the test's own, which kmock's client sends."""
    return [r for r in list(emulator) if not r.headers.get("User-Agent", "").startswith("kmock/")]


def kubeconfig(emulator: kmock.KubernetesEmulator, path: Path) -> Path:
    """A kubeconfig whose only cluster is the emulator."""
    server = str(emulator.servers[0].url).rstrip("/")
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "kmock"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
    }))
    return path
