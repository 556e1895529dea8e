"""paas.apps.spec: every rule of roles/app/tasks/assert.yml, plus the API's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paas.apps.spec import DeploySpec, RepoPolicy, Resources, parse_deploy
from paas.core.config import Settings
from paas.core.errors import ValidationError
from paas.core.validation import parse_empty
from paas.infra.requests import ProvisionSpec, parse_destroy, parse_provision

GOOD: dict[str, Any] = {
    "name": "web",
    "repo": "https://example.com/org/web.git",
    "port": 18080,
    "container_port": 5000,
}


def bad_fields(body: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_deploy(body)
    assert caught.value.status == 400
    return caught.value.fields


def test_minimal_request_gives_defaults() -> None:
    spec = parse_deploy(GOOD)
    assert spec == DeploySpec(name="web", repo=GOOD["repo"], port=18080, container_port=5000)
    assert spec.ref == "" and spec.health_path == "/" and spec.context == "." and dict(spec.env) == {}


def test_full_request_and_extra_vars() -> None:
    spec = parse_deploy(
        GOOD
        | {
            "ref": "release/1.2",
            "env": {"A_B": "x y", "_z": ""},
            "health_path": "/healthz?x=1",
            "context": "app/web",
        }
    )
    settings = Settings(
        data_dir=Path("/data"), app_memory="256m", app_cpus=0.5, app_pids=100, build_timeout=60
    )
    assert spec.extra_vars(settings) == {
        "app_name": "web",
        "app_repo": GOOD["repo"],
        "app_ref": "release/1.2",
        "app_port": 18080,
        "app_container_port": 5000,
        "app_env": {"A_B": "x y", "_z": ""},
        "app_health_path": "/healthz?x=1",
        "app_context": "app/web",
        "app_memory": "256m",
        "app_cpus": 0.5,
        "app_pids": 100,
        "app_build_timeout": 60,
    }


def test_env_values_are_not_in_the_repr() -> None:
    assert "s3cr3t" not in repr(parse_deploy(GOOD | {"env": {"K": "s3cr3t"}}))


@pytest.mark.parametrize(
    "repo",
    [
        "https://example.com/a/b.git",
        "https://example.com:8443/a",
        "ssh://git@example.com/a/b.git",
        "ssh://example.com:2222/a",
        "git@github.com:org/repo.git",
    ],
)
def test_accepted_repos(repo: str) -> None:
    assert parse_deploy(GOOD | {"repo": repo}).repo == repo


def test_file_repos_only_when_enabled_and_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    (root / "app").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    body = GOOD | {"repo": f"file://{root}/app"}
    # Off by default (no policy given means the strictest one).
    assert "not enabled" in bad_fields(body)["repo"]
    with pytest.raises(ValidationError) as caught:
        parse_deploy(body, RepoPolicy(allow_file=True))
    assert "PAAS_FILE_REPO_ROOTS" in caught.value.fields["repo"]
    policy = RepoPolicy(allow_file=True, file_roots=(root.resolve(),))
    assert parse_deploy(body, policy).repo == body["repo"]
    for outside in (
        f"file://{tmp_path}/elsewhere",
        f"file://{root}/link",
        f"file://{root}/app/../../elsewhere",
    ):
        with pytest.raises(ValidationError) as caught:
            parse_deploy(GOOD | {"repo": outside}, policy)
        assert "under one of" in caught.value.fields["repo"], outside
    with pytest.raises(ValidationError) as caught:
        parse_deploy(GOOD | {"repo": f"file://{root}/%61pp"}, policy)
    assert "%" in caught.value.fields["repo"]


def test_repo_hosts_limit_the_hosts() -> None:
    policy = RepoPolicy(hosts=("git.example.com",))
    for repo in ("https://git.example.com/a", "ssh://git@GIT.example.com/a", "git@git.example.com:a/b"):
        assert parse_deploy(GOOD | {"repo": repo}, policy).repo == repo
    for repo in ("https://example.com/a", "git@evil.example.org:a/b", "ssh://git.example.com.evil/a"):
        with pytest.raises(ValidationError) as caught:
            parse_deploy(GOOD | {"repo": repo}, policy)
        assert "PAAS_REPO_HOSTS" in caught.value.fields["repo"], repo


def test_repo_policy_of_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, allow_file_repos=True, file_repo_roots=(tmp_path,), repo_hosts=("h",)
    )
    assert RepoPolicy.of(settings) == RepoPolicy(True, (tmp_path,), ("h",))


@pytest.mark.parametrize(
    "repo",
    [
        "",
        "http://example.com/a",
        "https://user:pass@example.com/a",
        "https://token@example.com/a",
        "https://example.com",
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "fd::17",
        "--upload-pack=touch /tmp/pwned",
        "-uhttps://example.com/a",
        "file:///tmp/x y",
        "file:///tmp/x\n",
        "file:///tmp/x\x00",
        "https://example.com/a::b",
        "/srv/repo",
        "../repo",
        "file://host/path",
        "https://example.com/" + "a" * 2048,
        "$(touch /tmp/pwned)",
        "; rm -rf /",
        "https://example.com/{{lookup('pipe','id>/tmp/x')}}",
        "https://example.com/{%raw%}",
        "https://example.com/a}",
        "https://example.com/\ta",
        "https://-oProxyCommand=x/a",
        "ssh://-oProxyCommand=x/a",
        "ssh://git@-oProxyCommand=x/a",
        "ssh://-git@example.com/a",
        "git@-oProxyCommand=x:a",
        "-git@example.com:a",
        "file:///srv/repos/app",
    ],
)
def test_refused_repos(repo: str) -> None:
    assert "repo" in bad_fields(GOOD | {"repo": repo})


@pytest.mark.parametrize(
    "name", ["", "Web", "1web", "-web", "web_1", "../../etc", "a" * 32, "web\n", "we b", "wéb", "deploy"]
)
def test_refused_names(name: str) -> None:
    assert "name" in bad_fields(GOOD | {"name": name})


@pytest.mark.parametrize("name", ["a", "web-1", "a" * 31])
def test_accepted_names(name: str) -> None:
    assert parse_deploy(GOOD | {"name": name}).name == name


@pytest.mark.parametrize("port", [0, 80, 1023, 65536, 61000, 62000, 63999, -1, 10**20])
def test_refused_ports(port: int) -> None:
    assert "port" in bad_fields(GOOD | {"port": port})


@pytest.mark.parametrize("port", [1024, 60999, 64000, 65535, 8080.0])
def test_accepted_ports(port: int) -> None:
    spec = parse_deploy(GOOD | {"port": port})
    assert spec.port == port and isinstance(spec.port, int)


@pytest.mark.parametrize("port", [0, 65536, -5])
def test_refused_container_ports(port: int) -> None:
    assert "container_port" in bad_fields(GOOD | {"container_port": port})


@pytest.mark.parametrize(
    "ref", ["-x", "--upload-pack=x", "a..b", "..", "a b", "a;b", "$(x)", "a\n", "x" * 201, "a~1", "a^", "a:b"]
)
def test_refused_refs(ref: str) -> None:
    assert "ref" in bad_fields(GOOD | {"ref": ref})


@pytest.mark.parametrize("ref", ["", "main", "v1.2.3", "feature/x-y", "0123abcd", "_x", ".x"])
def test_accepted_refs(ref: str) -> None:
    assert parse_deploy(GOOD | {"ref": ref}).ref == ref


@pytest.mark.parametrize("path", ["", "healthz", "/a b", "/a\n", "/<x>", "/" + "a" * 256, '/"'])
def test_refused_health_paths(path: str) -> None:
    assert "health_path" in bad_fields(GOOD | {"health_path": path})


@pytest.mark.parametrize("context", ["", "/abs", "..", "../x", "a/../b", "a/..", "-x", "a b", "a\n"])
def test_refused_contexts(context: str) -> None:
    assert "context" in bad_fields(GOOD | {"context": context})


@pytest.mark.parametrize("context", [".", "app", "a/b/c", "a..b", "./x"])
def test_accepted_contexts(context: str) -> None:
    assert parse_deploy(GOOD | {"context": context}).context == context


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"1A": "x"}, "env"),
        ({"A-B": "x"}, "env"),
        ({"A B": "x"}, "env"),
        ({"": "x"}, "env"),
        ({"A": 1}, "env.A"),
        ({"A": None}, "env.A"),
        ({"A": True}, "env.A"),
        ({"A": ["x"]}, "env.A"),
        ({"A": "x\x00y"}, "env.A"),
    ],
)
def test_refused_env(env: dict[str, Any], field: str) -> None:
    assert field in bad_fields(GOOD | {"env": env})


def test_refused_env_never_echoes_values() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_deploy(GOOD | {"env": {"OK": "s3cr3t-value", "BAD": 12345678}})
    assert "s3cr3t" not in str(caught.value.to_json()) and "12345678" not in str(caught.value.to_json())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 1),
        ("repo", ["x"]),
        ("port", "8080"),
        ("port", 8080.5),
        ("port", True),
        ("port", None),
        ("container_port", "5000"),
        ("ref", 1),
        ("env", "A=b"),
        ("env", ["A"]),
        ("health_path", None),
        ("context", 0),
    ],
)
def test_wrong_types(field: str, value: Any) -> None:
    assert field in bad_fields(GOOD | {field: value})


def test_every_bad_field_is_named() -> None:
    fields = bad_fields(
        {
            "name": "BAD",
            "repo": "ext::sh",
            "port": 80,
            "container_port": 0,
            "ref": "-x",
            "env": {"K": 1},
            "health_path": "x",
            "context": "/",
            "extra": 1,
        }
    )
    assert set(fields) == {
        "name",
        "repo",
        "port",
        "container_port",
        "ref",
        "env.K",
        "health_path",
        "context",
        "extra",
    }


def test_missing_fields_are_named() -> None:
    assert bad_fields({}) == {
        "name": "is required",
        "repo": "is required",
        "port": "is required",
        "container_port": "is required",
    }


@pytest.mark.parametrize("body", [None, [], "x", 1, [GOOD]])
def test_body_must_be_an_object(body: Any) -> None:
    assert bad_fields(body) == {"body": "must be a JSON object"}


def test_destroy_body() -> None:
    assert parse_destroy({}) is False
    assert parse_destroy({"force": True}) is True
    for body in ({"force": "yes"}, {"force": 1}, {"other": True}, [], "x", None):
        with pytest.raises(ValidationError):
            parse_destroy(body)


def test_provision_body() -> None:
    assert parse_provision({}, "local") == ProvisionSpec("local", {})
    variables = {"port": 22, "ok": True, "cidrs": ["10.0.0.0/8"], "tags": {"team": "web", "n": 1.5}}
    spec = parse_provision({"environment": "ssh", "variables": variables}, "local")
    assert spec == ProvisionSpec("ssh", variables)
    assert "variables" not in repr(spec) and "10.0.0.0" not in repr(spec)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([], {"body": "must be a JSON object"}),
        ({"environment": "gcp"}, {"environment": "must be one of local, ssh, aws"}),
        ({"environment": None}, {"environment": "must be one of local, ssh, aws"}),
        ({"variables": "a=b"}, {"variables": "must be an object"}),
        (
            {"variables": {"9lives": 1}},
            {"variables": "names must match ^[a-z_][a-z0-9_]*$ (at most 64 characters)"},
        ),
        (
            {"variables": {"a" * 65: 1}},
            {"variables": "names must match ^[a-z_][a-z0-9_]*$ (at most 64 characters)"},
        ),
        (
            {"variables": {"x": None}},
            {"variables.x": "must be a string, a number, a boolean, or a list or an object of those"},
        ),
        (
            {"variables": {"x": [{"a": 1}]}},
            {"variables.x": "must be a string, a number, a boolean, or a list or an object of those"},
        ),
        (
            {"variables": {"x": {"a": [1]}}},
            {"variables.x": "must be a string, a number, a boolean, or a list or an object of those"},
        ),
        ({"variables": {"x": ["a\x00"]}}, {"variables.x": "must not contain NUL characters"}),
        ({"force": True}, {"force": "is not a known field"}),
    ],
)
def test_provision_body_errors_name_each_field(body: Any, fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_provision(body, "local")
    assert caught.value.fields == fields


def test_empty_body() -> None:
    parse_empty({})
    for body in ({"x": 1}, None, [], 0):
        with pytest.raises(ValidationError):
            parse_empty(body)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("repo", "file:///srv/x", True),
        ("repo", "git@github.com:org/repo.git", True),
        ("repo", "-@host:path", False),
        ("repo", "ext::sh -c x", False),
        ("repo", "https://u:p@host/x", False),
        ("repo", "https://ho\x1est/x", False),
        ("repo", "https://host/{{x}}", False),
        ("repo", "ssh://-oProxyCommand=x/a", False),
        ("resources", {"memory": "64m", "cpus": 0.5, "pids": 32}, True),
        ("resources", {"pids": 8}, False),
        ("ref", "main", True),
        ("ref", "a..b", False),
        ("ref", "-x", False),
        ("context", "a/b", True),
        ("context", "a/../b", False),
        ("port", 62000, False),
        ("name", "deploy", False),
        ("env", {"A": "x\x00"}, False),
    ],
)
def test_the_published_schema_agrees_with_the_rules(field: str, value: Any, ok: bool) -> None:
    """Schema-valid means accepted (schemathesis relies on it)."""
    from jsonschema import Draft202012Validator

    from paas.api.openapi import DEPLOY_REQUEST

    body = GOOD | {field: value}
    assert Draft202012Validator(DEPLOY_REQUEST).is_valid(body) is ok
    if ok:
        # The server's repo policy is not the document's: here, the most open one.
        parse_deploy(body, RepoPolicy(allow_file=True, file_roots=(Path("/"),)))
    else:
        assert any(k == field or k.startswith(f"{field}.") for k in bad_fields(body))


def test_resources_default_to_the_server_and_are_validated() -> None:
    settings = Settings(data_dir=Path("/data"))
    assert parse_deploy(GOOD).resources == Resources()
    assert parse_deploy(GOOD).extra_vars(settings)["app_memory"] == "512m"
    spec = parse_deploy(GOOD | {"resources": {"memory": "1G", "cpus": 1.5, "pids": 64}})
    assert spec.resources == Resources(memory="1g", cpus=1.5, pids=64)
    assert spec.resources.given() == {"memory": "1g", "cpus": 1.5, "pids": 64}
    half = parse_deploy(GOOD | {"resources": {"cpus": 2}})
    assert half.resources.effective(settings) == {"memory": "512m", "cpus": 2.0, "pids": 512}


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"memory": "1t"}, "resources.memory"),
        ({"memory": "5m"}, "resources.memory"),
        ({"memory": 512}, "resources.memory"),
        ({"memory": "0"}, "resources.memory"),
        ({"memory": "1048576"}, "resources.memory"),
        ({"memory": "512k"}, "resources.memory"),
        ({"cpus": 0}, "resources.cpus"),
        ({"cpus": 0.001}, "resources.cpus"),
        ({"cpus": 65}, "resources.cpus"),
        ({"cpus": "1"}, "resources.cpus"),
        ({"pids": 8}, "resources.pids"),
        ({"pids": 100000}, "resources.pids"),
        ({"pids": 1.5}, "resources.pids"),
        ({"pids": True}, "resources.pids"),
        ({"disk": "1g"}, "resources.disk"),
        ("big", "resources"),
    ],
)
def test_refused_resources(resources: Any, field: str) -> None:
    assert field in bad_fields(GOOD | {"resources": resources})
