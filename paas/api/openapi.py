"""The OpenAPI 3.1 document of the API (served at ``GET /openapi.json``).

It is assembled from the definitions the code uses: the request schemas :mod:`paas.apps.spec` and
:mod:`paas.infra.requests` enforce, the app schema derived from :class:`paas.apps.model.PublicApp`,
names and job ids from :mod:`paas.contract`. A unit test compares its paths with the registered routes.
"""

from __future__ import annotations

from typing import Any

from paas import __version__
from paas.apps.model import APP_SCHEMA
from paas.apps.spec import DEPLOY_REQUEST
from paas.contract import JOB_ID_PATTERN, NAME_PATTERN
from paas.core.jobs import JOB_STATUSES, PUBLIC_FIELDS
from paas.infra.requests import DESTROY_REQUEST, PROVISION_REQUEST

JOB_KINDS = ("deploy", "delete", "provision", "destroy", "check")
INFRA_STATES = ("absent", "provisioning", "ready", "failed", "destroying")
EVENT_RESULTS = ("ok", "changed", "failed", "skipped", "unreachable")

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
    "required": list(PUBLIC_FIELDS),
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
                "App": APP_SCHEMA,
                "Job": JOB,
                "Infra": INFRA,
            },
        },
    }
