"""inventory/terraform.py against canned `terraform output -json` documents and a fake terraform.

The script runs as Ansible runs it: a subprocess, JSON on stdout, one error line on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "inventory" / "terraform.py"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcwv5GFGZkiRFfv0RYZ76N+bls+KLqD619RxQ1T4/Xo"
HOSTS_TYPE = [
    "map",
    [
        "object",
        {
            "address": "string",
            "connection": "string",
            "groups": ["list", "string"],
            "host_key": "string",
            "port": "number",
            "private_key_file": "string",
            "python_interpreter": "string",
            "user": "string",
        },
    ],
]


def host(**fields: Any) -> dict[str, Any]:
    """A host object of the contract; ssh defaults, overridden by fields."""
    return {
        "address": "203.0.113.10",
        "port": 22,
        "user": "admin",
        "private_key_file": "/home/ops/.ssh/id_ed25519",
        "connection": "ssh",
        "groups": ["paas_hosts"],
        "host_key": "",
        **fields,
    }


def outputs(hosts: Any, environment: str = "ssh", **extra: Any) -> dict[str, Any]:
    """A document shaped like `terraform output -json`."""
    document = {
        "environment": {"sensitive": False, "type": "string", "value": environment},
        "hosts": {"sensitive": False, "type": HOSTS_TYPE, "value": hosts},
    }
    for name, value in extra.items():
        document[name] = {"sensitive": False, "type": "string", "value": value}
    return document


LOCAL = outputs(
    {
        "localhost": host(
            address="localhost", port=0, user="", private_key_file="", connection="local", host_key=""
        )
    },
    environment="local",
)
SSH = outputs(
    {
        "paas-ssh": host(
            address="192.0.2.10",
            port=2222,
            user="deploy",
            private_key_file="/keys/id_ed25519",
            groups=["paas_hosts", "web"],
            host_key=HOST_KEY,
            python_interpreter="/usr/bin/python3",
        )
    }
)
AWS = outputs(
    {
        "paas-aws": host(
            address="54.214.209.162",
            user="admin",
            private_key_file="/home/ops/.ssh/paas",
            host_key=HOST_KEY,
        )
    },
    environment="aws",
    instance_id="i-a06bde9b65c4e5338",
    public_ip="54.214.209.162",
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment: nothing inherited from the developer's PAAS_* or TF_* settings."""
    return {"PATH": os.environ["PATH"], "HOME": str(data_dir.parent), "PAAS_DATA_DIR": str(data_dir), **extra}


def run(
    args: list[str], data_dir: Path, document: Any = None, text: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the script with PAAS_TERRAFORM_OUTPUT holding document (JSON) or text (raw)."""
    if document is not None or text is not None:
        output = data_dir.parent / "output.json"
        output.write_text(text if text is not None else json.dumps(document), encoding="utf-8")
        env.setdefault("PAAS_TERRAFORM_OUTPUT", str(output))
    return subprocess.run(
        [str(SCRIPT), *args], env=base_env(data_dir, **env), capture_output=True, text=True, timeout=30
    )


def listed(data_dir: Path, document: Any, **env: str) -> dict[str, Any]:
    result = run(["--list"], data_dir, document, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    inventory: dict[str, Any] = json.loads(result.stdout)
    return inventory


def assert_fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Non-zero exit, nothing on stdout, one error line naming the problem."""
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("terraform.py: error: ")
    assert message in lines[0]


# --list ------------------------------------------------------------------------------------------


def test_local_environment_lists_localhost_with_the_local_connection(data_dir: Path) -> None:
    assert listed(data_dir, LOCAL) == {
        "_meta": {
            "hostvars": {
                "localhost": {
                    "ansible_host": "localhost",
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            }
        },
        "paas_hosts": {"hosts": ["localhost"]},
    }


def test_ssh_environment_lists_connection_variables_and_every_group(data_dir: Path) -> None:
    assert listed(data_dir, SSH, PAAS_TERRAFORM_ENV="ssh") == {
        "_meta": {
            "hostvars": {
                "paas-ssh": {
                    "ansible_host": "192.0.2.10",
                    "ansible_port": 2222,
                    "ansible_user": "deploy",
                    "ansible_become": True,
                    "ansible_ssh_private_key_file": "/keys/id_ed25519",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        },
        "paas_hosts": {"hosts": ["paas-ssh"]},
        "web": {"hosts": ["paas-ssh"]},
    }


def test_aws_environment_is_pinned_to_the_environments_known_hosts_file(data_dir: Path) -> None:
    known_hosts = data_dir / "known_hosts" / "aws"
    known_hosts.parent.mkdir()
    known_hosts.write_text(f"54.214.209.162 {HOST_KEY}\n", encoding="utf-8")

    inventory = listed(data_dir, AWS, PAAS_TERRAFORM_ENV="aws")

    assert inventory == {
        "_meta": {
            "hostvars": {
                "paas-aws": {
                    "ansible_host": "54.214.209.162",
                    "ansible_port": 22,
                    "ansible_user": "admin",
                    "ansible_become": True,
                    "ansible_ssh_private_key_file": "/home/ops/.ssh/paas",
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
                    ),
                }
            }
        },
        "paas_hosts": {"hosts": ["paas-aws"]},
    }


def test_known_hosts_file_of_another_environment_is_not_used(data_dir: Path) -> None:
    (data_dir / "known_hosts").mkdir()
    (data_dir / "known_hosts" / "ssh").write_text(f"192.0.2.10 {HOST_KEY}\n", encoding="utf-8")

    hostvars = listed(data_dir, AWS, PAAS_TERRAFORM_ENV="aws")["_meta"]["hostvars"]["paas-aws"]

    assert "ansible_ssh_common_args" not in hostvars


def test_known_hosts_path_is_quoted_for_ssh(tmp_path: Path) -> None:
    data_dir = tmp_path / "data dir"
    (data_dir / "known_hosts").mkdir(parents=True)
    (data_dir / "known_hosts" / "ssh").write_text("", encoding="utf-8")

    hostvars = listed(data_dir, SSH, PAAS_TERRAFORM_ENV="ssh")["_meta"]["hostvars"]["paas-ssh"]

    assert hostvars["ansible_ssh_common_args"] == (
        f"-o UserKnownHostsFile='{data_dir}/known_hosts/ssh' -o StrictHostKeyChecking=yes"
    )


def test_local_host_gets_no_ssh_arguments_even_with_a_known_hosts_file(data_dir: Path) -> None:
    (data_dir / "known_hosts").mkdir()
    (data_dir / "known_hosts" / "local").write_text("", encoding="utf-8")

    hostvars = listed(data_dir, LOCAL)["_meta"]["hostvars"]["localhost"]

    assert "ansible_ssh_common_args" not in hostvars


def test_empty_private_key_file_leaves_the_key_to_ssh(data_dir: Path) -> None:
    document = outputs({"h": host(private_key_file="", user="root")})

    hostvars = listed(data_dir, document)["_meta"]["hostvars"]["h"]

    assert hostvars == {"ansible_host": "203.0.113.10", "ansible_port": 22, "ansible_user": "root"}


def test_only_a_login_user_other_than_root_becomes_root(data_dir: Path) -> None:
    document = outputs({"r": host(user="root"), "u": host(user="ubuntu")})

    hostvars = listed(data_dir, document)["_meta"]["hostvars"]

    assert "ansible_become" not in hostvars["r"]
    assert hostvars["u"]["ansible_become"] is True


def test_python_interpreter_is_optional_and_ignored_for_a_local_host(data_dir: Path) -> None:
    document = outputs(
        {
            "old": host(),  # state written before the field existed
            "empty": host(python_interpreter=""),
            "set": host(python_interpreter="/opt/python/bin/python3.12"),
            "localhost": host(
                address="localhost",
                port=0,
                user="",
                connection="local",
                python_interpreter="/usr/bin/python3",
            ),
        }
    )

    hostvars = listed(data_dir, document)["_meta"]["hostvars"]

    assert "ansible_python_interpreter" not in hostvars["old"]
    assert "ansible_python_interpreter" not in hostvars["empty"]
    assert hostvars["set"]["ansible_python_interpreter"] == "/opt/python/bin/python3.12"
    assert hostvars["localhost"]["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


def test_every_host_is_in_paas_hosts_and_groups_are_listed_in_host_order(data_dir: Path) -> None:
    document = outputs(
        {
            "b": host(groups=["db"]),
            "a": host(groups=["paas_hosts", "db", "db"]),
            "c": host(groups=[]),
        }
    )

    inventory = listed(data_dir, document)

    assert inventory["paas_hosts"] == {"hosts": ["a", "b", "c"]}
    assert inventory["db"] == {"hosts": ["a", "b"]}
    assert sorted(inventory) == ["_meta", "db", "paas_hosts"]


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"environment": {"sensitive": False, "type": "string", "value": "aws"}},
        outputs({}),
    ],
    ids=["empty-state", "no-hosts-output", "no-hosts"],
)
def test_empty_state_is_an_empty_inventory(data_dir: Path, document: Any) -> None:
    result = run(["--list"], data_dir, document)

    assert result.returncode == 0
    assert json.loads(result.stdout) == {"_meta": {"hostvars": {}}}


def test_host_checking_is_never_turned_off(data_dir: Path) -> None:
    (data_dir / "known_hosts").mkdir()
    for environment, document in (("local", LOCAL), ("ssh", SSH), ("aws", AWS)):
        for pinned in (False, True):
            if pinned:
                (data_dir / "known_hosts" / environment).write_text("", encoding="utf-8")
            text = run(["--list"], data_dir, document, PAAS_TERRAFORM_ENV=environment).stdout
            assert text.startswith("{")
            assert "StrictHostKeyChecking=no" not in text
            assert "host_key_checking" not in text
            assert ("StrictHostKeyChecking=yes" in text) == (pinned and environment != "local")


# --host and --known-hosts ------------------------------------------------------------------------


def test_host_prints_the_variables_of_one_host(data_dir: Path) -> None:
    result = run(["--host", "paas-ssh"], data_dir, SSH)

    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "ansible_host": "192.0.2.10",
        "ansible_port": 2222,
        "ansible_user": "deploy",
        "ansible_become": True,
        "ansible_ssh_private_key_file": "/keys/id_ed25519",
        "ansible_python_interpreter": "/usr/bin/python3",
    }


def test_unknown_host_prints_an_empty_object(data_dir: Path) -> None:
    result = run(["--host", "nope"], data_dir, SSH)

    assert result.returncode == 0
    assert json.loads(result.stdout) == {}


def test_known_hosts_prints_one_line_per_pinned_ssh_host(data_dir: Path) -> None:
    document = outputs(
        {
            "a": host(address="198.51.100.1", host_key=HOST_KEY),
            "b": host(address="host.example.com", port=2222, host_key=HOST_KEY),
            "c": host(host_key=""),
            "d": host(connection="local", port=0, user="", host_key=HOST_KEY),
        }
    )

    result = run(["--known-hosts"], data_dir, document)

    assert result.returncode == 0
    assert result.stdout == f"198.51.100.1 {HOST_KEY}\n[host.example.com]:2222 {HOST_KEY}\n"


def test_a_mode_is_required(data_dir: Path) -> None:
    result = run([], data_dir, SSH)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "one of the arguments --list --host --known-hosts is required" in result.stderr


# malformed input ---------------------------------------------------------------------------------


def test_malformed_json_is_an_error(data_dir: Path) -> None:
    assert_fails(run(["--list"], data_dir, text='{"hosts": '), "terraform output is not valid JSON")


def test_empty_file_is_an_error(data_dir: Path) -> None:
    assert_fails(run(["--list"], data_dir, text=""), "terraform output is not valid JSON")


def without(field: str) -> dict[str, Any]:
    value = host()
    del value[field]
    return value


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "terraform output must be a JSON object of outputs, got list"),
        ({"hosts": ["h"]}, "output 'hosts' must be an object with a 'value'"),
        ({"hosts": {"sensitive": False}}, "output 'hosts' must be an object with a 'value'"),
        (outputs(["h"]), "output 'hosts' must be a map of inventory hostname to host object, got list"),
        (outputs(None), "output 'hosts' must be a map of inventory hostname to host object, got null"),
        (outputs({"h": "203.0.113.10"}), "host 'h': must be an object, got string"),
        (outputs({"h": without("address")}), "host 'h': missing 'address'"),
        (outputs({"h": {"address": "x"}}), "host 'h': missing 'port', 'user', 'private_key_file'"),
        (outputs({"h": host(address="")}), "host 'h': 'address' '' is not a DNS name or an IP address"),
        (outputs({"h": host(address="-oProxyCommand=sh")}), "'address' '-oProxyCommand=sh' is not a DNS"),
        (outputs({"h": host(address=10)}), "host 'h': 'address' must be a string, got number"),
        (outputs({"h": host(port="22")}), "host 'h': 'port' must be an integer from 0 to 65535, got '22'"),
        (outputs({"h": host(port=70000)}), "'port' must be an integer from 0 to 65535, got 70000"),
        (outputs({"h": host(port=True)}), "'port' must be an integer from 0 to 65535, got True"),
        (outputs({"h": host(port=0)}), "host 'h': an ssh host needs a 'port' from 1 to 65535 and a 'user'"),
        (outputs({"h": host(user="")}), "host 'h': an ssh host needs a 'port' from 1 to 65535 and a 'user'"),
        (outputs({"h": host(connection="winrm")}), "'connection' must be 'local' or 'ssh', got 'winrm'"),
        (outputs({"h": host(groups="web")}), "host 'h': 'groups' must be a list of strings, got 'web'"),
        (outputs({"h": host(groups=["all"])}), "host 'h': 'all' is not a valid group name"),
        (outputs({"h": host(groups=["web-1"])}), "host 'h': 'web-1' is not a valid group name"),
        (outputs({"h": host(host_key="AAAA")}), "'host_key' must be '' or '<type> <base64>', got 'AAAA'"),
        (outputs({"h": host(user="a\nb")}), "host 'h': 'user' must be on one line"),
        (outputs({"bad name": host()}), "host 'bad name': not a valid inventory hostname"),
        (
            outputs({"h": host(python_interpreter="python3")}),
            "'python_interpreter' must be '' or an absolute",
        ),
        (outputs({"h": host(python_interpreter="/x y")}), "'python_interpreter' must be '' or an absolute"),
        (outputs({"h": host(python_interpreter=3)}), "'python_interpreter' must be a string, got number"),
        (
            outputs({"h": host(private_key_file="{{ lookup('pipe', 'id') }}")}),
            "host 'h': 'private_key_file' must not contain a Jinja delimiter",
        ),
        (outputs({"h": host(private_key_file="/k/{% x %}")}), "'private_key_file' must not contain a Jinja"),
    ],
)
def test_wrong_shape_is_an_error_naming_what_is_wrong(data_dir: Path, document: Any, message: str) -> None:
    assert_fails(run(["--list"], data_dir, document), message)


def test_unreadable_output_file_is_an_error(data_dir: Path) -> None:
    missing = data_dir / "missing.json"

    result = run(["--list"], data_dir, PAAS_TERRAFORM_OUTPUT=str(missing))

    assert_fails(result, f"cannot read PAAS_TERRAFORM_OUTPUT={missing}")


def test_environment_name_must_be_safe(data_dir: Path) -> None:
    result = run(["--list"], data_dir, SSH, PAAS_TERRAFORM_ENV="../etc")

    assert_fails(result, "PAAS_TERRAFORM_ENV='../etc' is not an environment name")


# running terraform -------------------------------------------------------------------------------


def fake_terraform(bin_dir: Path, stdout: str = "{}", stderr: str = "", exit_code: int = 0) -> Path:
    """A `terraform` that records its argv and TF_DATA_DIR, then answers as told."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = bin_dir / "calls.jsonl"
    script = bin_dir / "terraform"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'tf_data_dir': os.environ.get('TF_DATA_DIR'),\n"
        "                        'tf_input': os.environ.get('TF_INPUT')}) + '\\n')\n"
        f"sys.stdout.write({stdout!r})\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({exit_code})\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return record


def initialise(data_dir: Path, environment: str) -> Path:
    path = data_dir / "terraform" / environment / ".terraform"
    path.mkdir(parents=True)
    return path


def test_runs_terraform_output_in_the_environments_module_with_its_data_dir(
    tmp_path: Path, data_dir: Path
) -> None:
    bin_dir = tmp_path / "bin"
    record = fake_terraform(bin_dir, stdout=json.dumps(AWS))
    tf_data_dir = initialise(data_dir, "aws")

    result = run(["--list"], data_dir, PAAS_TERRAFORM_ENV="aws", PATH=f"{bin_dir}:{os.environ['PATH']}")

    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)["_meta"]["hostvars"]) == ["paas-aws"]
    calls = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert calls == [
        {
            "argv": [f"-chdir={REPO_ROOT / 'terraform' / 'aws'}", "output", "-json", "-no-color"],
            "tf_data_dir": str(tf_data_dir),
            "tf_input": "0",
        }
    ]


def test_default_environment_is_local_and_default_data_dir_follows_xdg(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    record = fake_terraform(bin_dir, stdout=json.dumps(LOCAL))
    xdg = tmp_path / "xdg"
    tf_data_dir = initialise(xdg / "paas", "local")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "XDG_DATA_HOME": str(xdg)}

    result = subprocess.run([str(SCRIPT), "--list"], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    call = json.loads(record.read_text(encoding="utf-8"))
    assert call["argv"][0] == f"-chdir={REPO_ROOT / 'terraform' / 'local'}"
    assert call["tf_data_dir"] == str(tf_data_dir)


def test_default_data_dir_without_xdg_is_under_home(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    record = fake_terraform(bin_dir, stdout="{}")
    tf_data_dir = initialise(tmp_path / ".local" / "share" / "paas", "local")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}

    result = subprocess.run([str(SCRIPT), "--list"], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text(encoding="utf-8"))["tf_data_dir"] == str(tf_data_dir)


def test_failing_terraform_is_an_error_with_its_message(tmp_path: Path, data_dir: Path) -> None:
    bin_dir = tmp_path / "bin"
    stderr = (
        '╷\n│ Error: Backend initialization required, please run "terraform init"\n│\n'
        '│ Reason: Initial configuration of the requested backend "local"\n╵\n'
    )
    fake_terraform(bin_dir, stdout="", stderr=stderr, exit_code=1)
    initialise(data_dir, "ssh")

    result = run(["--list"], data_dir, PAAS_TERRAFORM_ENV="ssh", PATH=f"{bin_dir}:{os.environ['PATH']}")

    assert_fails(
        result,
        "terraform output for environment 'ssh' failed (exit 1): "
        'Error: Backend initialization required, please run "terraform init"',
    )


def test_missing_terraform_is_an_error(tmp_path: Path, data_dir: Path) -> None:
    initialise(data_dir, "local")
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"],
        env=base_env(data_dir, PATH=str(empty_bin)),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert_fails(result, "terraform is not found (needed to read environment 'local'; put terraform on PATH")


def test_paas_terraform_names_the_executable(tmp_path: Path, data_dir: Path) -> None:
    bin_dir = tmp_path / "tools"
    record = fake_terraform(bin_dir, stdout=json.dumps(LOCAL))
    (bin_dir / "terraform").rename(bin_dir / "terraform-1.11")
    initialise(data_dir, "local")

    result = run(["--list"], data_dir, PAAS_TERRAFORM=str(bin_dir / "terraform-1.11"))

    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text(encoding="utf-8"))["argv"][1:] == ["output", "-json", "-no-color"]


def test_uninitialised_environment_is_an_error(data_dir: Path) -> None:
    result = run(["--list"], data_dir, PAAS_TERRAFORM_ENV="aws")

    assert_fails(result, f"environment 'aws' is not initialised: {data_dir}/terraform/aws/.terraform")


def test_unknown_environment_is_an_error(data_dir: Path) -> None:
    result = run(["--list"], data_dir, PAAS_TERRAFORM_ENV="gcp")

    assert_fails(
        result, f"unknown environment 'gcp': {REPO_ROOT}/terraform/gcp is not a Terraform root module"
    )
