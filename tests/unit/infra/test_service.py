"""The infrastructure part of the service, in-process with a fake runner and a fake command executor:
what runs in which order, which variables reach Terraform and which are kept, the 400s and 409s, the
current environment and the inventory app jobs use."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.inprocess import InProcessApi

from paas.core.config import REPO_ROOT
from paas.core.runs import RunStatus
from paas.execution.runner import PlaybookRequest, PlaybookResult
from paas.infra.terraform import generate_host_key

TOKEN = "infra-unit-test-token-0123456789"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcwv5GFGZkiRFfv0RYZ76N+bls+KLqD619RxQ1T4/Xo"
KEY_PATH = "/srv/keys/very-private-deploy-key"
SSH_VARIABLES: dict[str, Any] = {
    "address": "192.0.2.10",
    "port": 2222,
    "user": "root",
    "private_key_path": KEY_PATH,
    "host_key": f"{HOST_KEY} root@server",
}
APP: dict[str, Any] = {
    "name": "web",
    "repo": "https://git.example.com/org/web.git",
    "port": 18080,
    "container_port": 5000,
}
TERRAFORM_INVENTORY = REPO_ROOT / "inventory" / "terraform.py"


class Api(InProcessApi):
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        super().__init__(tmp_path, token=TOKEN, data_dir=tmp_path / "data", **settings)

    def run(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        reply = self(method, path, body)
        assert reply.status == 202, reply.json()
        return self.wait_job(reply.json()["job"]["id"])

    def provision(self, environment: str | None = None, **variables: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"variables": variables}
        if environment is not None:
            body["environment"] = environment
        return self.run("POST", "/infra/provision", body)

    def database(self) -> str:
        return (self.data_dir / "paas.json").read_text(encoding="utf-8")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    yield a
    a.app.close()


def commands(api: Api) -> list[str]:
    """What ran, in order: ``terraform <command>``, ``known-hosts``, or the playbook."""
    return [
        "known-hosts" if c.argv[1].endswith("terraform.py") else f"terraform {c.argv[2]}"
        for c in api.executor.calls
    ]


# ---- provisioning ----
def test_local_provision_runs_terraform_then_host_yml_on_the_new_inventory(api: Api) -> None:
    job = api.provision()

    assert job["status"] == "succeeded", job
    assert commands(api) == [
        "terraform init",
        "terraform plan",
        "terraform apply",
        "terraform output",
        "known-hosts",
    ]
    init, plan, apply, output, _ = api.executor.calls
    data, module = api.data_dir, REPO_ROOT / "terraform" / "local"
    assert list(init.argv[1:]) == [
        f"-chdir={module}",
        "init",
        "-input=false",
        "-no-color",
        f"-backend-config=path={data}/terraform/local/terraform.tfstate",
    ]
    var_file, plan_file = plan.argv[-2].split("=", 1)[1], plan.argv[-1].split("=", 1)[1]
    assert list(plan.argv[1:]) == [
        f"-chdir={module}",
        "plan",
        "-input=false",
        "-no-color",
        f"-var-file={var_file}",
        f"-out={plan_file}",
    ]
    assert list(apply.argv[1:]) == [f"-chdir={module}", "apply", "-input=false", "-no-color", plan_file]
    assert list(output.argv[1:]) == [f"-chdir={module}", "output", "-json", "-no-color"]
    for call in api.executor.calls[:4]:
        assert call.env["TF_DATA_DIR"] == f"{data}/terraform/local/.terraform"
        assert call.env["TF_IN_AUTOMATION"] == "1" and call.env["TF_INPUT"] == "0"
        assert call.env["TF_CLI_CONFIG_FILE"] == f"{data}/terraform/terraformrc"
    # The run's files are gone.
    assert not Path(var_file).exists() and not Path(plan_file).exists()
    # host.yml ran last, against the environment's dynamic inventory.
    host = api.runner.calls[-1]
    assert host.playbook == "playbooks/host.yml" and host.inventory == TERRAFORM_INVENTORY
    assert host.env["PAAS_TERRAFORM_ENV"] == "local" and host.env["PAAS_DATA_DIR"] == str(data)
    # The plan is readable in the events.
    shown = [(e["task"], e["result"], e["host"]) for e in job["events"]]
    assert ("plan: terraform_data.this['localhost'] will be created", "changed", "controller") in shown
    assert ("Plan: 1 to add, 0 to change, 0 to destroy.", "changed", "controller") in shown
    assert ("terraform init", "ok", "controller") in shown
    infra = api("GET", "/infra").json()
    assert infra["environment"] == "local" and infra["state"] == "ready"
    assert infra["hosts"][0]["name"] == "localhost" and infra["hosts"][0]["connection"] == "local"
    # Sensitive outputs never reach the API nor the database.
    assert infra["outputs"] == {"environment": "local"}
    assert "sensitive-output-value" not in api.database()


def test_app_jobs_run_against_the_provisioned_environment_and_keep_doing_so_after_a_restart(
    api: Api,
) -> None:
    # Before any provision: the server's own inventory.
    assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"
    assert api.runner.calls[-1].inventory is None
    assert api.run("DELETE", "/apps/web")["status"] == "succeeded"
    assert api.provision("ssh", **SSH_VARIABLES)["status"] == "succeeded"
    api.restart()
    assert api("GET", "/infra").json()["environment"] == "ssh"
    assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"
    deploy = next(c for c in reversed(api.runner.calls) if c.playbook == "playbooks/deploy.yml")
    assert deploy.inventory == TERRAFORM_INVENTORY and deploy.env["PAAS_TERRAFORM_ENV"] == "ssh"
    # The health monitor too.
    api.app.service.monitor.check_health()
    status = api.runner.calls[-1]
    assert status.playbook == "playbooks/status.yml" and status.inventory == TERRAFORM_INVENTORY


def test_default_environment_is_the_configured_one(tmp_path: Path) -> None:
    api = Api(tmp_path, environment="ssh")
    try:
        assert api("GET", "/infra").json() | {"updated_at": None} == {
            "environment": "ssh",
            "state": "absent",
            "hosts": [],
            "outputs": {},
            "variables": {},
            "secret_variables": [],
            "job_id": None,
            "updated_at": None,
        }
        # A remote environment that is not provisioned has no hosts: deploys are refused.
        reply = api("POST", "/apps/deploy", APP)
        assert reply.status == 409 and reply.json()["error"] == "infra_absent"
        job = api.provision(**SSH_VARIABLES)
        assert job["status"] == "succeeded", job
        assert api.executor.seen_variables[0].environment == "ssh"
        assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"
    finally:
        api.app.close()


def test_ssh_pins_the_host_key_and_stores_no_secret_variable(api: Api) -> None:
    job = api.provision("ssh", **SSH_VARIABLES)

    assert job["status"] == "succeeded", job
    known_hosts = api.data_dir / "known_hosts" / "ssh"
    assert known_hosts.read_text() == f"[192.0.2.10]:2222 {HOST_KEY}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    (seen,) = api.executor.seen_variables
    assert seen.values == SSH_VARIABLES and seen.mode == 0o600
    infra = api("GET", "/infra").json()
    assert infra["variables"] == {"address": "192.0.2.10", "port": 2222, "user": "root"}
    assert infra["secret_variables"] == ["host_key", "private_key_path"]
    # Never on a command line, in an event, in the database or in the log of the job.
    assert all(KEY_PATH not in " ".join(c.argv) for c in api.executor.calls)
    assert KEY_PATH not in json.dumps(job) and KEY_PATH not in api.database()
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/ssh" in [e["task"] for e in job["events"]]


def test_secret_values_are_masked_in_what_terraform_says(api: Api) -> None:
    api.executor.fail["plan"] = (
        "\nError: Invalid value for variable\n\n  on vars.tfvars.json line 7:\n"
        f'   7:   "private_key_path": "{KEY_PATH}",\n    ├────────────────\n'
        f'    │ var.private_key_path is "{KEY_PATH}"\n\n'
        f"no readable key at {KEY_PATH}.\n\n"
        "This was checked by the validation rule at variables.tf:60,3-13.\n"
    )

    job = api.provision("ssh", **SSH_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "plan"
    assert job["message"] == (
        "terraform plan failed (exit 1): Error: Invalid value for variable: no readable key at ***."
    )
    assert KEY_PATH not in json.dumps(job) and KEY_PATH not in api.database()


def test_failed_plan_leaves_nothing_applied(api: Api) -> None:
    api.executor.fail["plan"] = (
        "\nError: No value for required variable\n\nThe root module input variable ...\n"
    )
    job = api.provision("ssh", **SSH_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "plan"
    assert job["message"].startswith("terraform plan failed (exit 1): Error: No value for required variable")
    assert commands(api) == ["terraform init", "terraform plan"]
    infra = api("GET", "/infra").json()
    assert infra["state"] == "failed" and infra["environment"] == "ssh" and infra["variables"] == {}
    # Nothing was applied: the destroy runs no terraform, and another environment may follow.
    assert api.run("POST", "/infra/destroy", {})["status"] == "succeeded"
    assert commands(api) == ["terraform init", "terraform plan"]
    del api.executor.fail["plan"]
    assert api.provision("local")["status"] == "succeeded"


def test_failed_host_yml_keeps_what_was_applied(api: Api) -> None:
    api.runner.handlers["playbooks/host.yml"] = lambda request: PlaybookResult(
        RunStatus.FAILED, rc=2, message="apt failed"
    )
    job = api.provision("ssh", **SSH_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "host" and job["message"] == "apt failed"
    infra = api("GET", "/infra").json()
    assert infra["state"] == "failed" and infra["hosts"][0]["name"] == "paas-ssh"
    assert infra["variables"] == {"address": "192.0.2.10", "port": 2222, "user": "root"}
    # Resources exist: switching needs a destroy first.
    reply = api("POST", "/infra/provision", {"environment": "local"})
    assert reply.status == 409 and reply.json()["error"] == "environment_in_use"


def test_missing_terraform_fails_the_job_clearly(tmp_path: Path) -> None:
    api = Api(tmp_path, terraform="terraform-that-is-not-installed")
    try:
        job = api.provision()
        assert job["status"] == "failed" and job["failed_step"] == "init"
        assert job["message"].startswith("terraform is not found ('terraform-that-is-not-installed')")
        assert api("GET", "/infra").json()["state"] == "failed"
    finally:
        api.app.close()


def test_cancel_stops_a_running_terraform(api: Api) -> None:
    api.executor.gate = threading.Event()
    reply = api("POST", "/infra/provision", {})
    job_id = reply.json()["job"]["id"]
    deadline = time.monotonic() + 5
    while not api.executor.calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert api("POST", f"/jobs/{job_id}/cancel").status == 202
    job = api.wait_job(job_id)
    assert job["status"] == "canceled"
    assert api("GET", "/infra").json()["state"] == "failed"


def test_aws_host_key_is_generated_once_and_never_shown(api: Api) -> None:
    rotate_on_host(api, generate_host_key("paas-aws")[1])
    job = api.provision("aws", admin_cidr="203.0.113.7/32", public_key_path="/home/ops/.ssh/id_ed25519.pub")
    assert job["status"] == "succeeded", job
    key_file = api.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"
    private = key_file.read_text()
    public = key_file.with_name("ssh_host_ed25519_key.pub").read_text().split()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key_file.stat().st_mode & 0o777 == 0o600
    (seen,) = api.executor.seen_variables
    assert seen.values["ssh_host_key"] == {"private_key": private, "public_key": " ".join(public)}
    assert private not in api.database() and private.splitlines()[1] not in json.dumps(job)
    # Provisioning again reuses the key (the host must keep the one pinned).
    assert api.provision("aws", public_key_path="/home/ops/.ssh/id_ed25519.pub")["status"] == "succeeded"
    assert api.executor.seen_variables[1].values["ssh_host_key"]["private_key"] == private
    assert api.executor.seen_variables[1].values["admin_cidr"] == "203.0.113.7/32"
    # The destroy forgets it (and the key made on the host): a new host gets a new key.
    assert api.run("POST", "/infra/destroy", {})["status"] == "succeeded"
    assert not key_file.exists() and not (api.data_dir / "known_hosts" / "aws").exists()
    assert not (api.data_dir / "terraform" / "aws" / "rotated_host_keys.json").exists()


def rotate_on_host(api: Api, key: str, **result: Any) -> list[str]:
    """host.yml plays role sshd_host_key: it reports ``key`` as made on the host. Returns what
    known_hosts/aws held each time host.yml ran (the key its connection was verified with)."""
    seen: list[str] = []

    def host_yml(request: PlaybookRequest) -> PlaybookResult:
        seen.append((api.data_dir / "known_hosts" / "aws").read_text())
        report = {"host": "paas-aws", "public_key": key}
        return PlaybookResult(**({"status": RunStatus.SUCCEEDED, "rc": 0} | result), facts={ROTATED: report})

    api.runner.handlers["playbooks/host.yml"] = host_yml
    return seen


ROTATED = "sshd_host_key_report"
AWS_VARIABLES = {"admin_cidr": "203.0.113.7/32", "public_key_path": "/home/ops/.ssh/id_ed25519.pub"}


def bootstrap_key(api: Api) -> str:
    return " ".join((api.data_dir / "terraform" / "aws" / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def test_aws_host_yml_replaces_the_bootstrap_key_and_the_server_pins_the_new_one(api: Api) -> None:
    made = generate_host_key("made-on-the-host")[1]
    new = " ".join(made.split()[:2])
    seen = rotate_on_host(api, made)
    known_hosts = api.data_dir / "known_hosts" / "aws"
    records = api.data_dir / "terraform" / "aws" / "rotated_host_keys.json"

    job = api.provision("aws", **AWS_VARIABLES)

    assert job["status"] == "succeeded", job
    # host.yml connected with the bootstrap key pinned, and was asked to replace it.
    assert seen == [f"198.51.100.7 {bootstrap_key(api)}\n"]
    host = api.runner.calls[-1]
    assert host.extravars == {"sshd_host_key_rotate": True}
    assert host.capture_facts == (ROTATED,)
    # The key the host reported is the only one pinned now.
    assert known_hosts.read_text() == f"198.51.100.7 {new}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    assert json.loads(records.read_text()) == {
        "paas-aws": {"host_key": new, "replaces": bootstrap_key(api), "instance_id": None}
    }
    assert records.stat().st_mode & 0o777 == 0o600
    assert [e for e in job["events"] if e["task"].startswith("Pin the host key made on paas-aws: SHA256:")]
    assert api("GET", "/infra").json()["hosts"][0]["host_key"] == new

    # Provisioning again: the outputs still report the bootstrap key, the new key stays pinned, and
    # host.yml connects with it (the host keeps its key: it reports the same).
    job = api.provision("aws", public_key_path="/home/ops/.ssh/id_ed25519.pub")

    assert job["status"] == "succeeded", job
    assert seen[-1] == f"198.51.100.7 {new}\n"
    assert known_hosts.read_text() == f"198.51.100.7 {new}\n"
    tasks = [e["task"] for e in job["events"]]
    assert "Pin the SSH host keys: 1 key(s) in known_hosts/aws (paas-aws: the key made on the host)" in tasks
    assert any(t.endswith("(pinned already)") for t in tasks), tasks


def test_a_replaced_instance_gets_the_bootstrap_key_pinned_then_replaced_again(api: Api) -> None:
    first, second = (" ".join(generate_host_key("h")[1].split()[:2]) for _ in range(2))
    fake_outputs = api.executor.outputs
    instance = {"id": "i-0000000000000000a"}

    def outputs(environment: str) -> dict[str, Any]:
        found = fake_outputs(environment)
        return found | {"instance_id": {"sensitive": False, "type": "string", "value": instance["id"]}}

    api.executor.outputs = outputs  # type: ignore[method-assign]
    rotate_on_host(api, first)
    assert api.provision("aws", **AWS_VARIABLES)["status"] == "succeeded"
    records = json.loads((api.data_dir / "terraform" / "aws" / "rotated_host_keys.json").read_text())
    assert records["paas-aws"]["instance_id"] == "i-0000000000000000a"

    # Terraform replaced the instance: it booted with the bootstrap key, which is pinned for host.yml.
    instance["id"] = "i-0000000000000000b"
    seen = rotate_on_host(api, second)
    job = api.provision("aws", public_key_path="/home/ops/.ssh/id_ed25519.pub")

    assert job["status"] == "succeeded", job
    assert seen == [f"198.51.100.7 {bootstrap_key(api)}\n"]
    assert (api.data_dir / "known_hosts" / "aws").read_text() == f"198.51.100.7 {second}\n"
    records = json.loads((api.data_dir / "terraform" / "aws" / "rotated_host_keys.json").read_text())
    assert records == {
        "paas-aws": {"host_key": second, "replaces": bootstrap_key(api), "instance_id": "i-0000000000000000b"}
    }


def test_a_key_made_before_host_yml_failed_is_pinned_all_the_same(api: Api) -> None:
    made = " ".join(generate_host_key("h")[1].split()[:2])
    rotate_on_host(api, made, status=RunStatus.FAILED, rc=2, message="the last task failed")

    job = api.provision("aws", **AWS_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "host", job
    assert job["message"] == "the last task failed"
    assert (api.data_dir / "known_hosts" / "aws").read_text() == f"198.51.100.7 {made}\n"


def test_host_yml_failing_before_the_key_is_replaced_keeps_the_bootstrap_key(api: Api) -> None:
    api.runner.handlers["playbooks/host.yml"] = lambda request: PlaybookResult(
        RunStatus.FAILED, rc=2, message="apt failed"
    )

    job = api.provision("aws", **AWS_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "host" and job["message"] == "apt failed"
    assert (api.data_dir / "known_hosts" / "aws").read_text() == f"198.51.100.7 {bootstrap_key(api)}\n"
    assert not (api.data_dir / "terraform" / "aws" / "rotated_host_keys.json").exists()


def test_host_yml_that_reports_no_key_fails_the_provision(api: Api) -> None:
    job = api.provision("aws", **AWS_VARIABLES)  # the fake host.yml succeeds and reports nothing

    assert job["status"] == "failed" and job["failed_step"] == "host", job
    assert "reported no host key made on the host (sshd_host_key_report)" in job["message"]
    assert (api.data_dir / "known_hosts" / "aws").read_text() == f"198.51.100.7 {bootstrap_key(api)}\n"


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({"host": "paas-aws", "public_key": f"{HOST_KEY}\n* {HOST_KEY}"}, "not one line of text"),
        (
            {"host": "paas-aws", "public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"},
            "not an 'ssh-ed25519",
        ),
        ({"host": "paas-aws", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="}, "not an ed25519"),
        ({"host": "other-host", "public_key": HOST_KEY}, "'other-host' is not an ssh host with a pinned key"),
        ("ssh-ed25519 AAAA", "the report is not {host, public_key}"),
    ],
)
def test_an_unusable_reported_key_is_never_pinned(api: Api, report: Any, reason: str) -> None:
    api.runner.handlers["playbooks/host.yml"] = lambda request: PlaybookResult(
        RunStatus.SUCCEEDED, rc=0, facts={ROTATED: report}
    )

    job = api.provision("aws", **AWS_VARIABLES)

    assert job["status"] == "failed" and job["failed_step"] == "host", job
    assert job["message"].startswith("prepare the hosts: Docker, nginx, git, directories, a host key made")
    assert reason in job["message"]
    assert (api.data_dir / "known_hosts" / "aws").read_text() == f"198.51.100.7 {bootstrap_key(api)}\n"


@pytest.mark.parametrize(("environment", "variables"), [("local", {}), ("ssh", SSH_VARIABLES)])
def test_other_environments_keep_their_host_keys(
    api: Api, environment: str, variables: dict[str, Any]
) -> None:
    # Even a host that reported a key made on it: the server asked for none and pins none.
    made = " ".join(generate_host_key("h")[1].split()[:2])
    api.runner.handlers["playbooks/host.yml"] = lambda request: PlaybookResult(
        RunStatus.SUCCEEDED, rc=0, facts={ROTATED: {"host": "paas-ssh", "public_key": made}}
    )

    assert api.provision(environment, **variables)["status"] == "succeeded"

    host = api.runner.calls[-1]
    assert host.playbook == "playbooks/host.yml"
    assert host.extravars == {"sshd_host_key_rotate": False} and host.capture_facts == ()
    if environment == "ssh":
        assert (api.data_dir / "known_hosts" / "ssh").read_text() == f"[192.0.2.10]:2222 {HOST_KEY}\n"
    assert not list((api.data_dir / "terraform").glob("*/rotated_host_keys.json"))


# ---- 400 ----
@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"environment": "gcp"}, {"environment": "must be one of local, ssh, aws"}),
        ({"variables": []}, {"variables": "must be an object"}),
        (
            {"variables": {"Bad-Name": 1}},
            {"variables": "names must match ^[a-z_][a-z0-9_]*$ (at most 64 characters)"},
        ),
        (
            {"variables": {"groups": [["nested"]]}},
            {"variables.groups": "must be a string, a number, a boolean, or a list or an object of those"},
        ),
        (
            {"variables": {"groups": None}},
            {"variables.groups": "must be a string, a number, a boolean, or a list or an object of those"},
        ),
        ({"variables": {"host_name": "a\x00b"}}, {"variables.host_name": "must not contain NUL characters"}),
        (
            {"variables": {"region": "eu-west-1"}},
            {"variables.region": "is not a variable of terraform/local"},
        ),
        ({"extra": 1}, {"extra": "is not a known field"}),
    ],
)
def test_400_names_each_bad_field(api: Api, body: dict[str, Any], fields: dict[str, str]) -> None:
    reply = api("POST", "/infra/provision", body)
    assert reply.status == 400
    assert reply.json()["fields"] == fields
    assert not api.executor.calls


def test_400_for_ssh_without_a_host_key(api: Api) -> None:
    reply = api("POST", "/infra/provision", {"environment": "ssh", "variables": {"address": "192.0.2.10"}})
    assert reply.status == 400
    assert list(reply.json()["fields"]) == ["variables.host_key"]
    assert "never trusted on first use" in reply.json()["fields"]["variables.host_key"]


def test_400_for_a_host_key_the_server_generates(api: Api) -> None:
    reply = api("POST", "/infra/provision", {"environment": "aws", "variables": {"ssh_host_key": "x"}})
    assert reply.status == 400
    assert reply.json()["fields"]["variables.ssh_host_key"].startswith("is set by the server")


def test_secret_variables_must_be_sent_again(api: Api) -> None:
    assert api.provision("ssh", **SSH_VARIABLES)["status"] == "succeeded"
    reply = api("POST", "/infra/provision", {"environment": "ssh", "variables": {"port": 2200}})
    assert reply.status == 400
    assert sorted(reply.json()["fields"]) == ["variables.host_key", "variables.private_key_path"]
    # Sent again: the stored values fill in the rest.
    job = api.provision("ssh", port=2200, host_key=HOST_KEY, private_key_path=KEY_PATH)
    assert job["status"] == "succeeded", job
    assert api.executor.seen_variables[-1].values == SSH_VARIABLES | {"port": 2200, "host_key": HOST_KEY}


# ---- 409 ----
def test_switching_environment_needs_the_current_one_destroyed(api: Api) -> None:
    assert api.provision("local")["status"] == "succeeded"
    reply = api("POST", "/infra/provision", {"environment": "ssh", "variables": SSH_VARIABLES})
    assert reply.status == 409 and reply.json()["error"] == "environment_in_use"
    assert api.run("POST", "/infra/destroy", {})["status"] == "succeeded"
    assert api.provision("ssh", **SSH_VARIABLES)["status"] == "succeeded"


def test_switching_environment_with_apps_is_refused(api: Api) -> None:
    assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"
    reply = api("POST", "/infra/provision", {"environment": "ssh", "variables": SSH_VARIABLES})
    assert reply.status == 409 and reply.json()["error"] == "apps_exist"
    # The same environment may be provisioned with apps (host.yml again).
    assert api.provision("local")["status"] == "succeeded"


def test_destroy_is_refused_with_apps_unless_forced(api: Api) -> None:
    assert api.provision("ssh", **SSH_VARIABLES)["status"] == "succeeded"
    assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"
    reply = api("POST", "/infra/destroy", {})
    assert reply.status == 409 and reply.json()["error"] == "apps_exist"

    job = api.run("POST", "/infra/destroy", {"force": True})

    assert job["status"] == "succeeded", job
    remove = next(c for c in api.runner.calls if c.playbook == "playbooks/remove.yml")
    assert remove.extravars == {"app_name": "web"} and remove.env["PAAS_TERRAFORM_ENV"] == "ssh"
    assert commands(api)[-2:] == ["terraform init", "terraform destroy"]
    # The destroy had the stored values only: no secret one.
    destroy = api.executor.seen_variables[-1]
    assert destroy.command == "destroy" and destroy.values == {
        "address": "192.0.2.10",
        "port": 2222,
        "user": "root",
    }
    assert api("GET", "/apps").json() == {"apps": []}
    infra = api("GET", "/infra").json()
    assert infra["state"] == "absent" and infra["hosts"] == [] and infra["environment"] == "ssh"
    assert not (api.data_dir / "known_hosts" / "ssh").exists()


def test_infra_jobs_and_deploys_wait_for_each_other(api: Api) -> None:
    api.executor.gate = threading.Event()
    provision = api("POST", "/infra/provision", {}).json()["job"]["id"]
    deploy = api("POST", "/apps/deploy", APP).json()["job"]["id"]
    # Queued because of the provision, not because no worker looked at it yet.
    assert api.app.service.jobs.waiting_on(deploy) == [provision]
    assert api("GET", f"/jobs/{deploy}").json()["status"] == "queued"
    reply = api("POST", "/infra/destroy", {"force": True})
    assert reply.status == 409 and reply.json()["error"] == "infra_busy"
    api.executor.gate.set()
    assert api.wait_job(provision)["status"] == "succeeded"
    assert api.wait_job(deploy)["status"] == "succeeded"


def test_host_key_refusal_is_a_connect_failure(api: Api) -> None:
    assert api.run("POST", "/apps/deploy", APP)["status"] == "succeeded"

    def refused(request: PlaybookRequest) -> PlaybookResult:
        return PlaybookResult(
            RunStatus.FAILED, rc=4, failed_step="connect", message="host key changed for localhost: ..."
        )

    api.runner.handlers["playbooks/deploy.yml"] = refused
    job = api.run("POST", "/apps/deploy", APP)
    assert job["status"] == "failed" and job["failed_step"] == "connect"
    assert job["message"] == "host key changed for localhost: ..."


def test_cli_vars_are_strings_or_json_lists_and_maps() -> None:
    import click

    from paas.cli import _variables

    assert _variables(
        ["address=192.0.2.10", "port=2222", "app_ports=[8080, 8443]", 'tags={"team": "web"}']
    ) == {
        "address": "192.0.2.10",
        "port": "2222",
        "app_ports": [8080, 8443],
        "tags": {"team": "web"},
    }
    assert _variables(["host_key=ssh-ed25519 AAAA= a=b"]) == {"host_key": "ssh-ed25519 AAAA= a=b"}
    with pytest.raises(click.BadParameter, match="app_ports"):
        _variables(["app_ports=[8080,"])
