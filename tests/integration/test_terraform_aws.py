"""terraform/aws planned, applied and destroyed against moto (an AWS emulator) on 127.0.0.1.

Nothing leaves the machine: the provider's endpoints point at moto through an override file added
to a copy of the module (the module itself never overrides endpoints) and through
AWS_ENDPOINT_URL; credentials are fake. The addresses moto hands out are never connected to.

moto runs as the Debian AMI publisher's account (MOTO_ACCOUNT_ID), so an image registered in the
test is found by the module's real AMI lookup (owner 136693071363). Terraform runs as an emulated
IAM user allowed exactly the actions of terraform/aws/iam-policy.json (moto checks actions, not
resources or conditions): a call the policy forgot shows up as a 403 in moto's log.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError
from support.components import AWS_PROVIDER_MIRROR, MOTO, SSH_KEYGEN, TERRAFORM, requires

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = REPO_ROOT / "terraform" / "aws"
SCRIPT = REPO_ROOT / "inventory" / "terraform.py"
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
DEBIAN_ACCOUNT = "136693071363"
REGION = "eu-west-1"
ADMIN_CIDR = "203.0.113.7/32"
MIRROR_CLI_CONFIG = """\
provider_installation {{
  filesystem_mirror {{
    path    = "{mirror}"
    include = ["registry.terraform.io/*/*"]
  }}
  direct {{
    exclude = ["registry.terraform.io/*/*"]
  }}
}}
"""
# Requests moto serves before it starts checking IAM: the seven setup calls in `moto` below.
SETUP_CALLS = 7


def find_provider_mirror() -> Path | None:
    """A filesystem mirror holding hashicorp/aws, or None (then the tests cannot run: no registry)."""
    default = Path("/opt/tf-plugins")
    if (default / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        return default
    pattern = ["-name", "terraform-provider-aws*", "-path", "*/registry.terraform.io/hashicorp/aws/*"]
    found = subprocess.run(
        ["find", "/", "-xdev", *pattern, "-not", "-path", "*/.terraform/*", "-print", "-quit"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout.strip()
    # <mirror>/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/terraform-provider-aws_*
    return Path(found).parents[5] if found else None


MIRROR = find_provider_mirror() if shutil.which("terraform") else None
pytestmark = pytest.mark.integration
needs = requires(
    TERRAFORM,
    dataclasses.replace(AWS_PROVIDER_MIRROR, present=lambda: MIRROR is not None),
    MOTO,
    SSH_KEYGEN,
)


@dataclass(frozen=True)
class Moto:
    endpoint: str
    log: Path
    image_id: str
    access_key_id: str
    secret_access_key: str
    admin_key: tuple[str, str]  # a user allowed every action
    # Lines of moto's log before this one are the fixture's own (its positive control).
    checked_from: int = 0

    def client(self, service: str, *, admin: bool = False) -> Any:
        """A client as Terraform's user (the policy's actions only), or as the admin."""
        import boto3

        key_id, secret = self.admin_key if admin else (self.access_key_id, self.secret_access_key)
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def denied_requests(self) -> list[str]:
        return [line for line in self.log_lines()[self.checked_from :] if '" 403 ' in line]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout}s")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    import boto3

    workdir = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = workdir / "moto.log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "MOTO_ACCOUNT_ID": DEBIAN_ACCOUNT,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS),
    }
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process)
        endpoint = f"http://127.0.0.1:{port}"
        admin = {
            "region_name": REGION,
            "endpoint_url": endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        ec2 = boto3.client("ec2", **admin)
        iam = boto3.client("iam", **admin)
        # The seven setup calls (SETUP_CALLS); moto checks IAM from the next request on.
        image_id = ec2.register_image(Name="debian-12-amd64-20250610-2137")["ImageId"]
        keys = {}
        for user, policy in (("paas-terraform", actions_only_policy()), ("paas-admin", ALLOW_ALL)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        terraform, admin_key = keys["paas-terraform"], keys["paas-admin"]
        moto = Moto(
            endpoint,
            log,
            image_id,
            terraform["AccessKeyId"],
            terraform["SecretAccessKey"],
            (admin_key["AccessKeyId"], admin_key["SecretAccessKey"]),
        )
        # Positive control of denied_requests() == [] below: moto enforces the policy and its log shows
        # a refusal. As Terraform's user an action of the policy is served, one outside it refused (403
        # in the log); the same call is served to the admin (so the refusal is the policy's).
        moto.client("ec2").describe_images(ImageIds=[image_id])
        with pytest.raises(ClientError) as refused:
            moto.client("ec2").describe_regions()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, refused.value.response
        assert moto.client("ec2", admin=True).describe_regions()["Regions"]
        wait_until_logged = time.monotonic() + 10
        while len(moto.denied_requests()) != 1 and time.monotonic() < wait_until_logged:
            time.sleep(0.05)
        assert len(moto.denied_requests()) == 1, moto.log_lines()
        yield dataclasses.replace(moto, checked_from=len(moto.log_lines()))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def actions_only_policy() -> dict[str, Any]:
    """terraform/aws/iam-policy.json reduced to its actions: what moto can enforce."""
    policy = json.loads((MODULE / "iam-policy.json").read_text(encoding="utf-8"))
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        action = statement["Action"]
        actions.update([action] if isinstance(action, str) else action)
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": sorted(actions), "Resource": "*"}],
    }


@dataclass(frozen=True)
class Workspace:
    module: Path
    data_dir: Path
    env: dict[str, str]
    variables: list[str]
    user_key: Path
    host_key: Path

    def terraform(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["terraform", f"-chdir={self.module}", *args, "-no-color"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert result.returncode == 0, f"terraform {args[0]} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def inventory(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The inventory as Ansible runs it, against the repository's terraform/aws and this data dir."""
        env = {
            "PATH": self.env["PATH"],
            "HOME": self.env["HOME"],
            "TF_CLI_CONFIG_FILE": self.env["TF_CLI_CONFIG_FILE"],
            "PAAS_TERRAFORM_ENV": "aws",
            "PAAS_DATA_DIR": str(self.data_dir),
        }
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def ssh_keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def workspace(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("aws")
    data_dir = root / "data"
    (data_dir / "terraform" / "aws").mkdir(parents=True)

    # A copy of the module plus the test's own endpoints: the repository stays untouched.
    module = root / "module"
    module.mkdir()
    for source in MODULE.glob("*.tf"):
        shutil.copy(source, module / source.name)
    (module / "provider_override.tf").write_text(
        'provider "aws" {\n'
        "  skip_credentials_validation = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_requesting_account_id  = true\n"
        "  endpoints {\n"
        + "".join(f'    {service} = "{moto.endpoint}"\n' for service in ("ec2", "iam", "sts"))
        + "  }\n}\n",
        encoding="utf-8",
    )
    cli_config = root / "terraformrc"
    cli_config.write_text(MIRROR_CLI_CONFIG.format(mirror=MIRROR), encoding="utf-8")

    user_key = root / "id_ed25519"
    host_key = data_dir / "terraform" / "aws" / "ssh_host_ed25519_key"
    ssh_keygen(user_key, "ops@controller")
    ssh_keygen(host_key, "paas-aws")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_DATA_DIR": str(data_dir / "terraform" / "aws" / ".terraform"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "TF_VAR_ssh_host_key": json.dumps(
            {
                "private_key": host_key.read_text(encoding="utf-8"),
                "public_key": host_key.with_suffix(".pub").read_text(encoding="utf-8"),
            }
        ),
    }
    variables = [
        f"-var=region={REGION}",
        f"-var=admin_cidr={ADMIN_CIDR}",
        f"-var=public_key_path={user_key}.pub",
    ]
    workspace = Workspace(module, data_dir, env, variables, user_key, host_key)
    state = data_dir / "terraform" / "aws" / "terraform.tfstate"
    workspace.terraform("init", f"-backend-config=path={state}")
    return workspace


@pytest.fixture(scope="module")
def applied(workspace: Workspace, moto: Moto) -> Iterator[dict[str, Any]]:
    """The module applied; `terraform show -json` of the result. Destroyed at the end."""
    workspace.terraform("apply", "-auto-approve", *workspace.variables)
    try:
        yield json.loads(workspace.terraform("show", "-json").stdout)
    finally:
        state = json.loads((workspace.data_dir / "terraform" / "aws" / "terraform.tfstate").read_text())
        if state.get("resources"):
            workspace.terraform("destroy", "-auto-approve", *workspace.variables, check=False)


def resources(shown: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [r for r in shown["values"]["root_module"]["resources"] if r["type"] == resource_type]


def public_host_key(workspace: Workspace) -> str:
    key_type, key = workspace.host_key.with_suffix(".pub").read_text(encoding="utf-8").split()[:2]
    return f"{key_type} {key}"


def test_lookup_finds_the_newest_official_image(applied: dict[str, Any], moto: Moto) -> None:
    (image,) = resources(applied, "aws_ami")
    (instance,) = resources(applied, "aws_instance")

    assert image["values"]["owners"] == [DEBIAN_ACCOUNT]
    assert instance["values"]["ami"] == moto.image_id


def test_ssh_is_open_to_the_admin_network_only(applied: dict[str, Any]) -> None:
    rules = resources(applied, "aws_vpc_security_group_ingress_rule")
    ssh = [r["values"] for r in rules if r["values"]["from_port"] <= 22 <= r["values"]["to_port"]]

    assert [(rule["cidr_ipv4"], rule["cidr_ipv6"]) for rule in ssh] == [(ADMIN_CIDR, None)]
    for rule in rules:
        values = rule["values"]
        if values["cidr_ipv4"] == "0.0.0.0/0":
            assert values["from_port"] >= 1024, rule["address"]
    assert sorted((r["values"]["from_port"], r["values"]["cidr_ipv4"]) for r in rules) == [
        (22, ADMIN_CIDR),
        (8080, "0.0.0.0/0"),
    ]


def test_instance_requires_imdsv2_and_encrypts_its_root_volume(applied: dict[str, Any]) -> None:
    (instance,) = resources(applied, "aws_instance")
    values = instance["values"]

    (metadata,) = values["metadata_options"]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 1
    (root,) = values["root_block_device"]
    assert root["encrypted"] is True
    assert root["volume_type"] == "gp3"
    assert root["volume_size"] == 20
    assert values["instance_type"] == "t3.micro"
    assert values["credit_specification"] == [{"cpu_credits": "standard"}]


def test_every_resource_is_tagged(applied: dict[str, Any]) -> None:
    for resource in applied["values"]["root_module"]["resources"]:
        if resource["mode"] != "managed":
            continue
        tags = resource["values"]["tags"]
        assert tags["paas:managed"] == "true", resource["address"]
        assert tags["paas:environment"] == "aws", resource["address"]
        assert tags["Name"] == "paas-aws", resource["address"]


def test_user_data_installs_the_pinned_host_key(
    applied: dict[str, Any], workspace: Workspace, moto: Moto
) -> None:
    (instance,) = resources(applied, "aws_instance")
    attribute = moto.client("ec2").describe_instance_attribute(
        InstanceId=instance["values"]["id"], Attribute="userData"
    )

    user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()

    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    assert config["ssh_keys"] == {
        "ed25519_private": workspace.host_key.read_text(encoding="utf-8"),
        "ed25519_public": public_host_key(workspace),
    }
    assert config["ssh_deletekeys"] is True
    assert config["ssh_pwauth"] is False
    assert "python3" in config["packages"]


def test_outputs_follow_the_inventory_contract(applied: dict[str, Any], workspace: Workspace) -> None:
    outputs = {name: output["value"] for name, output in applied["values"]["outputs"].items()}
    (instance,) = resources(applied, "aws_instance")

    assert outputs["environment"] == "aws"
    assert outputs["hosts"] == {
        "paas-aws": {
            "address": instance["values"]["public_ip"],
            "port": 22,
            "user": "admin",
            "private_key_file": str(workspace.user_key),
            "connection": "ssh",
            "groups": ["paas_hosts"],
            "host_key": public_host_key(workspace),
            "python_interpreter": "/usr/bin/python3",
        }
    }
    assert outputs["host_key"] == public_host_key(workspace)
    assert not applied["values"]["outputs"]["hosts"]["sensitive"]


def test_inventory_reads_the_created_host_and_pins_its_key(
    applied: dict[str, Any], workspace: Workspace
) -> None:
    address = resources(applied, "aws_instance")[0]["values"]["public_ip"]

    known_hosts = workspace.inventory("--known-hosts")
    assert known_hosts.returncode == 0, known_hosts.stderr
    assert known_hosts.stdout == f"{address} {public_host_key(workspace)}\n"
    known_hosts_file = workspace.data_dir / "known_hosts" / "aws"
    known_hosts_file.parent.mkdir(exist_ok=True)
    known_hosts_file.write_text(known_hosts.stdout, encoding="utf-8")

    listed = workspace.inventory("--list")

    pinned = f"-o UserKnownHostsFile={known_hosts_file} -o StrictHostKeyChecking=yes"
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "_meta": {
            "hostvars": {
                "paas-aws": {
                    "ansible_host": address,
                    "ansible_port": 22,
                    "ansible_user": "admin",
                    "ansible_become": True,
                    "ansible_ssh_private_key_file": str(workspace.user_key),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_common_args": pinned,
                }
            }
        },
        "paas_hosts": {"hosts": ["paas-aws"]},
    }


def test_second_plan_changes_nothing(applied: dict[str, Any], workspace: Workspace) -> None:
    result = workspace.terraform("plan", "-detailed-exitcode", *workspace.variables, check=False)

    assert result.returncode == 0, f"plan is not empty:\n{result.stdout}\n{result.stderr}"


def test_terraform_needs_no_action_outside_the_iam_policy(applied: dict[str, Any], moto: Moto) -> None:
    assert moto.denied_requests() == []


@pytest.fixture(scope="module")
def variables_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """terraform/aws/variables.tf alone: its validation rules, checked without provider or AWS."""
    module = tmp_path_factory.mktemp("variables")
    shutil.copy(MODULE / "variables.tf", module / "variables.tf")
    return module


def plan_variables(module: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    (module / "terraformrc").touch()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(module),
        "TF_CLI_CONFIG_FILE": str(module / "terraformrc"),
        "TF_DATA_DIR": str(module / ".terraform"),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
    }
    return subprocess.run(
        ["terraform", f"-chdir={module}", "plan", "-no-color", *variables],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_safe_input_is_accepted(variables_only: Path) -> None:
    result = plan_variables(
        variables_only,
        "-var=admin_cidr=2001:db8::/32",
        "-var=app_ports=[8080, 8443]",
        '-var=app_cidrs=["198.51.100.0/24", "::/0"]',
        "-var=os=ubuntu2404",
        "-var=public_key=ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@laptop",
    )

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("admin_cidr", ["10.0.0.0/8", "203.0.113.0/24", "203.0.113.7/32", "2001:db8::/32"])
def test_admin_cidr_of_at_least_a_slash_8_is_accepted(variables_only: Path, admin_cidr: str) -> None:
    result = plan_variables(variables_only, f"-var=admin_cidr={admin_cidr}")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("-var=admin_cidr=0.0.0.0/0", "narrower than the whole Internet (not 0.0.0.0/0 or ::/0)"),
        ("-var=admin_cidr=::/0", "narrower than the whole Internet"),
        ("-var=admin_cidr=0.0.0.0/1", "admin_cidr must have a prefix length of at least /8"),
        ("-var=admin_cidr=128.0.0.0/7", "admin_cidr must have a prefix length of at least /8"),
        ("-var=admin_cidr=::/1", "admin_cidr must have a prefix length of at least /8"),
        ("-var=admin_cidr=203.0.113.7/24", "in canonical CIDR form"),
        ("-var=admin_cidr=office", "in canonical CIDR form"),
        ("-var=app_ports=[22, 8080]", "Each app port must be an integer from 1024 to 65535"),
        ("-var=app_ports=[70000]", "Each app port must be an integer from 1024 to 65535"),
        ('-var=app_cidrs=["10.0.0.1/8"]', "Each entry of app_cidrs must be an IPv4 or IPv6 network"),
        ("-var=os=centos", 'os must be "debian12" or "ubuntu2404"'),
        ("-var=instance_type=t3 micro", "instance_type must be an EC2 instance type"),
        ("-var=root_volume_size=4", "root_volume_size must be an integer from 8 to 16384"),
        ("-var=public_key=ecdsa-sha2-nistp256 AAAAE2Vj", "EC2 key pairs support no other type"),
        ('-var=ssh_host_key={private_key = "x", public_key = "y"}', "ssh_host_key must be null or"),
        ("-var=subnet_id=default", "subnet_id must be null or a subnet ID"),
    ],
)
def test_unsafe_input_is_rejected(variables_only: Path, variable: str, message: str) -> None:
    result = plan_variables(variables_only, f"-var=admin_cidr={ADMIN_CIDR}", variable)

    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())


def test_destroy_removes_the_host_and_empties_the_inventory(
    applied: dict[str, Any], workspace: Workspace, moto: Moto
) -> None:
    workspace.terraform("destroy", "-auto-approve", *workspace.variables)

    listed = workspace.inventory("--list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"_meta": {"hostvars": {}}}
    reservations = moto.client("ec2").describe_instances()["Reservations"]
    states = {i["State"]["Name"] for r in reservations for i in r["Instances"]}
    assert states <= {"terminated", "shutting-down"}
    assert moto.denied_requests() == []
