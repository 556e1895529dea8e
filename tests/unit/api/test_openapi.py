"""The OpenAPI document matches the routes, and schemathesis finds no 5xx nor any answer outside it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from support.fakes import FakeExecutor, FakeRunner, call_wsgi
from waitress.server import create_server

from paas.api.openapi import openapi_document
from paas.api.routes import create_app, route_table
from paas.core.config import Settings

TOKEN = "openapi-test-token-0123456789"
METHODS = {"get", "post", "put", "patch", "delete"}


def test_document_lists_exactly_the_registered_routes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, api_token=TOKEN, monitor_interval=0), runner=FakeRunner())
    try:
        routes = route_table(app.wsgi)
        documented = {
            (method.upper(), path)
            for path, item in openapi_document()["paths"].items()
            for method in item
            if method in METHODS
        }
        assert routes == documented
        served = call_wsgi(app, "GET", "/openapi.json", token=TOKEN)
        assert served.status == 200 and served.json() == openapi_document()
    finally:
        app.close()


def test_route_table_converts_bottle_wildcards() -> None:
    import bottle

    app = bottle.Bottle()
    app.route("/jobs/<id>/cancel", method="POST", callback=lambda id: None)
    app.route("/apps/<name:re:(?!deploy$)[^/]+>", method="DELETE", callback=lambda name: None)
    assert route_table(app) == {("POST", "/jobs/{id}/cancel"), ("DELETE", "/apps/{name}")}


def test_document_schemas_are_valid_json_schemas() -> None:
    doc = openapi_document()
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for item in doc["paths"].values():
        for method, operation in item.items():
            assert method in METHODS
            assert operation["operationId"]
            assert "responses" in operation


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("schemathesis")
    runner = FakeRunner()
    # Terraform is played by the fake executor: this file only has to exist.
    terraform = data / "terraform"
    terraform.write_text("#!/bin/sh\nexit 99\n")
    terraform.chmod(0o755)
    app = create_app(
        Settings(
            data_dir=data,
            api_token=TOKEN,
            monitor_interval=0,
            workers=4,
            shutdown_grace=1,
            terraform=str(terraform),
            # Any file:// repo the document allows is accepted (the policy is the server's, not the
            # document's).
            allow_file_repos=True,
            file_repo_roots=(Path("/"),),
        ),
        runner=runner,
        executor=FakeExecutor(),
    )
    server: Any = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        app.close()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case: Any, base_url: str) -> None:
    excluded = []
    if (case.method, case.path) == ("POST", "/infra/provision"):
        # The document gives the syntax of Terraform variable names; which names exist is decided by
        # terraform/<env>/variables.tf, so a well-formed but unknown name is rightly a 400. Every other
        # check (no 5xx, answers as documented) still runs on this operation.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded
    )
