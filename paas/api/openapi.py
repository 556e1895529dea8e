"""JSON Schemas of the API's bodies and its OpenAPI 3.1 document (served at ``GET /openapi.json``).

The request schemas are the ones :mod:`paas.apps.spec` enforces, so the document cannot drift from
the checks; a unit test compares the document's paths with the registered routes.
"""

from __future__ import annotations

from typing import Any

from paas import __version__
from paas.core.config import ENVIRONMENTS

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
# roles/app/tasks/assert.yml's alternatives (no host or user starting with '-'), then no whitespace,
# control character, '{' or '}', and no '::'.
REPO_PATTERN = (
    r"^(?!.*::)(?!-)(https://(?!-)[^/@:\s{}\x00-\x1f\x7f]+(:[0-9]+)?/"
    r"|ssh://([A-Za-z0-9._][A-Za-z0-9._-]*@)?(?!-)[^/@:\s{}\x00-\x1f\x7f]+(:[0-9]+)?/"
    r"|[A-Za-z0-9._][A-Za-z0-9._-]*@[A-Za-z0-9.][A-Za-z0-9.-]*:[^\s{}\x00-\x1f\x7f]|file:///)"
    r"[^\s{}\x00-\x1f\x7f]*$"
)
# A container memory size in megabytes or gigabytes, at least 6m (Docker's own minimum).
MEMORY_PATTERN = r"^(([6-9]|[1-9][0-9]{1,6})[mM]|[1-9][0-9]{0,3}[gG])$"
CPUS_MIN, CPUS_MAX = 0.01, 64
PIDS_MIN, PIDS_MAX = 16, 65536
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
APP_STATES = ("pending", "running", "unhealthy", "failed")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
JOB_KINDS = ("deploy", "delete", "provision", "destroy", "check")
INFRA_STATES = ("absent", "provisioning", "ready", "failed", "destroying")
EVENT_RESULTS = ("ok", "changed", "failed", "skipped", "unreachable")
FAILED_STEPS = ("clone", "build", "start", "health", "cutover")

DEPLOY_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "repo", "port", "container_port"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "not": {"const": "deploy"},
            "description": "App name ('deploy' is reserved).",
        },
        "repo": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "pattern": REPO_PATTERN,
            "description": "Git URL: https://host/path, ssh://[user@]host/path, user@host:path or "
            "file:///path (file:// only when the server allows it, under its PAAS_FILE_REPO_ROOTS; hosts "
            "limited to PAAS_REPO_HOSTS when set). No whitespace, '{' or '}', no host starting with '-'.",
        },
        "port": {
            "type": "integer",
            "minimum": 1024,
            "maximum": 65535,
            "not": {"type": "integer", "minimum": 61000, "maximum": 63999},
            "description": "Public port on the host (not within 61000-63999, the platform's internal range).",
        },
        "container_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "ref": {
            "type": "string",
            "maxLength": 200,
            "pattern": r"^$|^(?!.*\.\.)[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}$",
            "description": "Branch, tag or commit; empty for the default branch.",
        },
        "env": {
            "type": "object",
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": "string", "pattern": r"^[^\x00]*$"},
            "description": "Environment variables of the container. Values are never stored nor logged.",
        },
        "health_path": {"type": "string", "pattern": r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,255}$"},
        "context": {
            "type": "string",
            "pattern": r"^(?!(.*/)?\.\.(/|$))[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}$",
            "description": "Build context: a directory of the repository (symlinks must resolve inside it).",
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "memory": {
                    "type": "string",
                    "pattern": MEMORY_PATTERN,
                    "description": "Memory limit in m or g, e.g. 256m or 1g (at least 6m).",
                },
                "cpus": {"type": "number", "minimum": CPUS_MIN, "maximum": CPUS_MAX},
                "pids": {"type": "integer", "minimum": PIDS_MIN, "maximum": PIDS_MAX},
            },
            "description": "Limits of the app's container; each one not given is the server's default "
            "(PAAS_APP_MEMORY, PAAS_APP_CPUS, PAAS_APP_PIDS).",
        },
    },
}

VARIABLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
# Sizes are bounded by the body limit (64 KiB) alone.
_TF_SCALAR: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": r"^[^\x00]*$"}, {"type": "number"}, {"type": "boolean"}]
}

PROVISION_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "environment": {
            "enum": list(ENVIRONMENTS),
            "description": "terraform/<environment>/ to apply; default: the server's PAAS_ENVIRONMENT.",
        },
        "variables": {
            "type": "object",
            "propertyNames": {"pattern": VARIABLE_NAME_PATTERN},
            "additionalProperties": {
                "anyOf": [
                    _TF_SCALAR,
                    {"type": "array", "items": _TF_SCALAR},
                    {"type": "object", "additionalProperties": _TF_SCALAR},
                ]
            },
            "description": "Terraform variables of the environment's module (strings, numbers, booleans, "
            "or lists or maps of those). Values of variables whose name contains key, secret, token, "
            "password, passphrase or credential are never stored nor shown; the others are kept for "
            "later provisions and the destroy.",
        },
    },
}

DESTROY_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"force": {"type": "boolean", "description": "Remove every app first."}},
}

_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "fields"],
    "properties": {
        "error": {"type": "string", "description": "Machine code, e.g. invalid, not_found, conflict."},
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

JOB: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "kind",
        "app",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "failed_step",
        "message",
        "events",
    ],
    "properties": {
        "id": {"type": "string", "pattern": JOB_ID_PATTERN},
        "kind": {"enum": list(JOB_KINDS)},
        "app": _NULLABLE_STRING,
        "status": {"enum": list(JOB_STATUSES)},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _TIMESTAMP,
        "finished_at": _TIMESTAMP,
        "failed_step": _NULLABLE_STRING,
        "message": _NULLABLE_STRING,
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "task", "host", "result"],
                "properties": {
                    "at": {"type": "string"},
                    "task": {"type": "string"},
                    "host": {"type": "string"},
                    "result": {"enum": list(EVENT_RESULTS)},
                },
            },
        },
    },
}

APP: dict[str, Any] = {
    "type": "object",
    "required": [
        "name",
        "state",
        "repo",
        "ref",
        "commit",
        "port",
        "container_port",
        "health_path",
        "url",
        "created_at",
        "updated_at",
        "last_deploy",
        "health",
        "resources",
    ],
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "state": {"enum": list(APP_STATES)},
        "repo": {"type": "string"},
        "ref": {"type": "string"},
        "commit": _NULLABLE_STRING,
        "port": {"type": "integer"},
        "container_port": {"type": "integer"},
        "health_path": {"type": "string"},
        "url": {"type": "string"},
        "resources": {
            "type": "object",
            "required": ["memory", "cpus", "pids"],
            "properties": {
                "memory": {"type": "string"},
                "cpus": {"type": "number"},
                "pids": {"type": "integer"},
            },
            "description": "The container's limits (the server's defaults fill in).",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "last_deploy": {
            "type": ["object", "null"],
            "required": ["job_id", "status", "started_at", "finished_at", "failed_step", "message"],
            "properties": {
                "job_id": {"type": "string"},
                "status": {"enum": list(JOB_STATUSES)},
                "started_at": _TIMESTAMP,
                "finished_at": _TIMESTAMP,
                "failed_step": _NULLABLE_STRING,
                "message": _NULLABLE_STRING,
            },
        },
        "health": {
            "type": "object",
            "required": ["checked_at", "attempts"],
            "properties": {
                "checked_at": _TIMESTAMP,
                "attempts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["code", "latency_ms"],
                        "properties": {
                            "code": {"type": ["integer", "null"]},
                            "latency_ms": {"type": ["number", "null"]},
                        },
                    },
                },
            },
        },
    },
}

INFRA: dict[str, Any] = {
    "type": "object",
    "required": ["environment", "state", "hosts", "outputs"],
    "properties": {
        "environment": {
            "type": "string",
            "description": "The current environment: the one provisioned last (the apps' jobs run against "
            "its inventory), else the server's PAAS_ENVIRONMENT.",
        },
        "state": {"enum": list(INFRA_STATES)},
        "hosts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "address", "connection"],
                "properties": {
                    "name": {"type": "string"},
                    "address": {"type": "string"},
                    "connection": {"type": "string"},
                },
            },
        },
        "outputs": {
            "type": "object",
            "description": "Terraform outputs but `hosts` (sensitive ones left out).",
        },
        "variables": {"type": "object", "description": "Stored Terraform variables (never secret ones)."},
        "secret_variables": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Names of the secret variables of the last provision (values never stored).",
        },
        "job_id": _NULLABLE_STRING,
        "updated_at": _TIMESTAMP,
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Invalid request: `fields` names every bad field",
        401: "Missing or wrong bearer token",
        404: "No such resource",
        405: "Method not allowed",
        409: "Conflict with the current state",
        413: "Body larger than 64 KiB (over 1 MiB: refused before it is read, in plain text)",
        415: "Body is not JSON",
        429: "Too many jobs queued (`too_many_jobs`, PAAS_MAX_QUEUED): retry after `Retry-After` seconds",
        503: "Server shutting down",
    }
    responses = {str(code): _json(_ref("Error"), words[code]) for code in codes}
    if "429" in responses:
        responses["429"]["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}
        }
    return responses


_NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN},
}
_JOB_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}
# Every route with a JSON body queues a job: 429 when the queue is full.
_JSON_BODY_ERRORS = (400, 401, 409, 413, 415, 429, 503)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route of :mod:`paas.api.routes`."""
    job_accepted = {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mini PaaS control plane",
            "version": __version__,
            "description": "Deploy apps from Git repositories onto Docker hosts behind nginx. Every "
            "route but GET /healthz needs `Authorization: Bearer <token>`. Long operations answer "
            "202 with a job to poll at GET /jobs/{id}.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness of the server",
                    "security": [],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            },
                            "The server answers",
                        )
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document"), **_errors(401)},
                }
            },
            "/apps": {
                "get": {
                    "operationId": "listApps",
                    "summary": "Every app, sorted by name",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["apps"],
                                "properties": {"apps": {"type": "array", "items": _ref("App")}},
                            },
                            "The apps",
                        ),
                        **_errors(401),
                    },
                }
            },
            "/apps/deploy": {
                "post": {
                    "operationId": "deployApp",
                    "summary": "Deploy a new app or redeploy one (blue/green); a deploy of the app still "
                    "queued is superseded: it ends canceled",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("DeployRequest")}},
                    },
                    "responses": {
                        "202": {
                            **_json(
                                {
                                    "type": "object",
                                    "required": ["app", "job"],
                                    "properties": {"app": _ref("App"), "job": _ref("Job")},
                                },
                                "Deploy queued",
                            ),
                            "headers": {
                                "Location": {"schema": {"type": "string"}, "description": "/jobs/<id>"}
                            },
                        },
                        **_errors(*_JSON_BODY_ERRORS),
                        "409": _json(
                            _ref("Error"),
                            "Conflict: `port_in_use`, `app_deleting`, `infra_absent`, or `too_many_apps` "
                            "(a new app beyond PAAS_MAX_APPS; redeploys of existing apps are accepted)",
                        ),
                    },
                }
            },
            "/apps/{name}/status": {
                "get": {
                    "operationId": "appStatus",
                    "summary": "Status of one app",
                    "parameters": [_NAME_PARAM],
                    "responses": {"200": _json(_ref("App"), "The app"), **_errors(401, 404)},
                }
            },
            "/apps/{name}": {
                "delete": {
                    "operationId": "deleteApp",
                    "summary": "Remove an app: containers, images, proxy config, files",
                    "parameters": [_NAME_PARAM],
                    "responses": {
                        "202": _json(job_accepted, "Removal queued"),
                        **_errors(401, 404, 409, 429, 503),
                    },
                }
            },
            "/infra": {
                "get": {
                    "operationId": "infra",
                    "summary": "The infrastructure environment and its hosts",
                    "responses": {"200": _json(_ref("Infra"), "The environment"), **_errors(401)},
                }
            },
            "/infra/provision": {
                "post": {
                    "operationId": "provisionInfra",
                    "summary": "Apply terraform/<environment>/ (init, plan, apply), pin the hosts' SSH keys, "
                    "prepare the hosts (playbooks/host.yml)",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("ProvisionRequest")}},
                    },
                    "responses": {
                        "202": _json(job_accepted, "Provisioning queued"),
                        **_errors(*_JSON_BODY_ERRORS),
                    },
                }
            },
            "/infra/destroy": {
                "post": {
                    "operationId": "destroyInfra",
                    "summary": "Tear the environment down (409 while apps exist, unless force)",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("DestroyRequest")}},
                    },
                    "responses": {
                        "202": _json(job_accepted, "Destruction queued"),
                        **_errors(*_JSON_BODY_ERRORS),
                    },
                }
            },
            "/jobs/{id}": {
                "get": {
                    "operationId": "job",
                    "summary": "A job and its task events",
                    "parameters": [_JOB_PARAM],
                    "responses": {"200": _json(_ref("Job"), "The job"), **_errors(401, 404)},
                }
            },
            "/jobs/{id}/cancel": {
                "post": {
                    "operationId": "cancelJob",
                    "summary": "Cancel a job: a queued one at once, a running one as soon as Ansible stops",
                    "parameters": [_JOB_PARAM],
                    "responses": {
                        "202": _json(job_accepted, "Cancel requested (or done, for a queued job)"),
                        **_errors(401, 404, 409),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "DeployRequest": DEPLOY_REQUEST,
                "ProvisionRequest": PROVISION_REQUEST,
                "DestroyRequest": DESTROY_REQUEST,
                "Error": ERROR,
                "App": APP,
                "Job": JOB,
                "Infra": INFRA,
            },
        },
    }
