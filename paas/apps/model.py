"""The one model of an app: what was asked (``desired``), what serves (``served``), its last deploy and
its health. The store keeps it as a document (:meth:`App.to_doc`); the API shows :class:`PublicApp`
(:meth:`App.public`), whose OpenAPI schema derives from the same types (:data:`APP_SCHEMA`).

An app's ``state`` tells what serves now:

- ``pending``: a new app whose first deploy has not finished;
- ``running``: the serving container answers its health probe;
- ``unhealthy``: the serving container runs but its probe fails (after retries);
- ``failed``: nothing serves (first deploy failed, container gone...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict, cast

from paas.apps.spec import DeploySpec, Resources
from paas.contract import APP_STATES, NAME_PATTERN
from paas.core.config import Settings
from paas.core.jobs import JOB_STATUSES
from paas.core.store import Doc
from paas.core.typeschema import schema_of

_TIMESTAMP = {"format": "date-time"}


class Attempt(TypedDict):
    code: int | None
    latency_ms: float | None


class Health(TypedDict):
    checked_at: Annotated[str | None, _TIMESTAMP]
    attempts: list[Attempt]


class LastDeploy(TypedDict):
    job_id: str
    status: Annotated[str, {"enum": list(JOB_STATUSES)}]
    started_at: Annotated[str | None, _TIMESTAMP]
    finished_at: Annotated[str | None, _TIMESTAMP]
    failed_step: str | None
    message: str | None


class Limits(TypedDict):
    memory: str
    cpus: float
    pids: int


class PublicApp(TypedDict):
    """An app as ``GET /apps`` and ``GET /apps/<name>/status`` show it."""

    name: Annotated[str, {"pattern": NAME_PATTERN}]
    state: Annotated[str, {"enum": list(APP_STATES)}]
    repo: str
    ref: str
    commit: str | None
    port: int
    container_port: int
    health_path: str
    url: str
    resources: Annotated[Limits, {"description": "The container's limits (the server's defaults fill in)."}]
    created_at: Annotated[str, _TIMESTAMP]
    updated_at: Annotated[str, _TIMESTAMP]
    last_deploy: LastDeploy | None
    health: Health


APP_SCHEMA = schema_of(PublicApp)


def no_health() -> Health:
    return {"checked_at": None, "attempts": []}


def health_of(entry: dict[str, Any] | None) -> Health:
    """``{checked_at, attempts: [{code, latency_ms}]}`` from a probe result or a status report entry."""
    source = entry or {}
    if "health" in source and isinstance(source["health"], dict):
        source = source["health"]
    raw = source.get("attempts")
    attempts: list[Any] = raw if isinstance(raw, list) else []
    return {
        "checked_at": source.get("checked_at"),
        "attempts": [
            {"code": a.get("code"), "latency_ms": a.get("latency_ms")}
            for a in attempts
            if isinstance(a, dict)
        ],
    }


def deploy_record(job: Doc) -> LastDeploy:
    """An app's ``last_deploy``: the deploy job as it stands."""
    return {
        "job_id": job["id"],
        "status": job["status"],
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "failed_step": job.get("failed_step"),
        "message": job.get("message"),
    }


def desired_of(spec: DeploySpec) -> dict[str, Any]:
    """What the store keeps of a deploy request: everything but the env values."""
    return {
        "repo": spec.repo,
        "ref": spec.ref,
        "port": spec.port,
        "container_port": spec.container_port,
        "health_path": spec.health_path,
        "context": spec.context,
        "env_keys": sorted(spec.env),
        "resources": spec.resources.given(),
    }


@dataclass
class App:
    """An app's record. ``generation`` grows with every job submitted for it (the health monitor
    drops a result older than the last job); ``deleting`` is the id of its delete job."""

    name: str
    state: str
    desired: dict[str, Any]
    created_at: str
    updated_at: str
    served: dict[str, Any] | None = None
    last_deploy: LastDeploy | None = None
    health: Health = field(default_factory=no_health)
    generation: int = 0
    deleting: str | None = None

    @classmethod
    def from_doc(cls, doc: Doc) -> App:
        return cls(
            name=doc["name"],
            state=doc["state"],
            desired=dict(doc["desired"]),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            served=dict(doc["served"]) if doc.get("served") else None,
            last_deploy=doc.get("last_deploy"),
            health=doc.get("health") or no_health(),
            generation=int(doc.get("generation", 0)),
            deleting=doc.get("deleting"),
        )

    def to_doc(self) -> Doc:
        return {
            "name": self.name,
            "state": self.state,
            "desired": self.desired,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "served": self.served,
            "last_deploy": self.last_deploy,
            "health": self.health,
            "generation": self.generation,
            "deleting": self.deleting,
        }

    def set_last_deploy(self, job: Doc) -> None:
        """Record ``job`` as the last deploy, if it is the one the app last asked for."""
        if self.last_deploy is not None and self.last_deploy["job_id"] == job["id"]:
            self.last_deploy = deploy_record(job)

    def public(self, settings: Settings) -> PublicApp:
        shown = self.served or self.desired
        port = int(shown["port"])
        return {
            "name": self.name,
            "state": self.state,
            "repo": shown["repo"],
            "ref": shown["ref"],
            "commit": (self.served or {}).get("commit"),
            "port": port,
            "container_port": int(shown["container_port"]),
            "health_path": shown["health_path"],
            "url": f"http://{settings.public_host}:{port}/",
            "resources": cast(Limits, Resources(**(shown.get("resources") or {})).effective(settings)),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_deploy": self.last_deploy,
            "health": self.health,
        }
