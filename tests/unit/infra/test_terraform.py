"""paas.infra.terraform (what to run, with which environment, and how to read Terraform) and
paas.execution.commands (the executor: streaming, capture, cancel, timeout), without Terraform."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from paas.core.config import REPO_ROOT, SettingsError, load_settings
from paas.core.files import write_private
from paas.core.runs import RunStatus
from paas.execution.commands import CommandRequest, SubprocessExecutor
from paas.infra import terraform as tf


@pytest.fixture
def workspace(tmp_path: Path) -> tf.Workspace:
    return tf.Workspace("ssh", REPO_ROOT, tmp_path / "data")


# ---- builders ----
def test_commands_are_argument_vectors_without_values(workspace: tf.Workspace) -> None:
    module, data = f"-chdir={REPO_ROOT}/terraform/ssh", workspace.data_dir
    var_file, plan = Path("/run/v.tfvars.json"), Path("/run/p.tfplan")
    assert tf.init_argv("tf", workspace) == [
        "tf",
        module,
        "init",
        "-input=false",
        "-no-color",
        f"-backend-config=path={data}/terraform/ssh/terraform.tfstate",
    ]
    assert tf.plan_argv("tf", workspace, var_file, plan) == [
        "tf",
        module,
        "plan",
        "-input=false",
        "-no-color",
        "-var-file=/run/v.tfvars.json",
        "-out=/run/p.tfplan",
    ]
    assert tf.apply_argv("tf", workspace, plan) == [
        "tf",
        module,
        "apply",
        "-input=false",
        "-no-color",
        str(plan),
    ]
    assert tf.output_argv("tf", workspace) == ["tf", module, "output", "-json", "-no-color"]
    assert tf.destroy_argv("tf", workspace, var_file) == [
        "tf",
        module,
        "destroy",
        "-input=false",
        "-no-color",
        "-auto-approve",
        "-var-file=/run/v.tfvars.json",
    ]
    assert tf.known_hosts_argv("py", workspace) == [
        "py",
        f"{REPO_ROOT}/inventory/terraform.py",
        "--known-hosts",
    ]


def test_process_env_keeps_credentials_and_drops_what_must_not_reach_terraform(
    workspace: tf.Workspace,
) -> None:
    base = {
        "PATH": "/usr/bin",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "PAAS_API_TOKEN": "token",
        "TF_VAR_admin_cidr": "0.0.0.0/0",
        "TF_CLI_ARGS_apply": "-auto-approve",
        "TF_LOG": "TRACE",
        "TF_CLI_CONFIG_FILE": "/root/.terraformrc",
    }
    env = tf.process_env(base, workspace)
    assert env == {
        "PATH": "/usr/bin",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "TF_DATA_DIR": f"{workspace.data_dir}/terraform/ssh/.terraform",
        "TF_CLI_CONFIG_FILE": f"{workspace.data_dir}/terraform/terraformrc",
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
    }


def test_declared_variables_are_read_from_the_module() -> None:
    assert tf.declared_variables(REPO_ROOT / "terraform" / "ssh") >= {
        "address",
        "port",
        "user",
        "private_key_path",
        "host_key",
        "python_interpreter",
    }
    assert "ssh_host_key" in tf.declared_variables(REPO_ROOT / "terraform" / "aws")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("private_key_path", True),
        ("host_key", True),
        ("db_password", True),
        ("api_token", True),
        ("client_secret", True),
        ("address", False),
        ("admin_cidr", False),
        ("python_interpreter", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert tf.is_secret_name(name) is secret


def test_redactor_masks_secret_values_longest_first() -> None:
    redact = tf.secret_masker(
        {"db_password": "hunter2", "api_token": "hunter2-and-more", "user": "root", "key_ids": [12345, "ab"]}
    )
    assert redact("hunter2-and-more, hunter2, root, 12345, ab") == "***, ***, root, ***, ab"


def test_variables_file_has_one_variable_per_line() -> None:
    text = tf.variables_file_text({"b": 1, "a": ["x"]})
    assert json.loads(text) == {"a": ["x"], "b": 1}
    assert text.splitlines()[1] == '  "a": ['


def test_write_private_is_0600_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f"
    write_private(path, "x")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "x"


def test_generated_host_key_is_an_openssh_ed25519_pair() -> None:
    private, public = tf.generate_host_key("paas-aws")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert public.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and public.endswith(" paas-aws")


# ---- CLI config and mirror ----
def make_mirror(root: Path, *providers: str) -> Path:
    for provider in providers:
        (root / provider / "5.100.0" / "linux_amd64").mkdir(parents=True)
    return root


def test_cli_config_installs_the_mirrors_providers_from_it_only(tmp_path: Path) -> None:
    mirror = make_mirror(tmp_path / "m", "registry.terraform.io/hashicorp/aws")
    assert tf.cli_config(mirror).splitlines()[1:] == [
        "provider_installation {",
        "  filesystem_mirror {",
        f'    path    = "{mirror}"',
        '    include = ["registry.terraform.io/hashicorp/aws"]',
        "  }",
        "  direct {",
        '    exclude = ["registry.terraform.io/hashicorp/aws"]',
        "  }",
        "}",
    ]


def test_cli_config_without_a_mirror_is_empty(tmp_path: Path) -> None:
    assert tf.cli_config(None).strip().startswith("#") and len(tf.cli_config(None).splitlines()) == 1
    assert tf.cli_config(tmp_path).strip().startswith("#")  # a mirror without providers


def test_mirror_detection(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", make_mirror(tmp_path / "full", "registry.terraform.io/hashicorp/aws")
    empty.mkdir()
    assert tf.find_plugin_mirror(None, [tmp_path / "missing", empty, full]) == full
    assert tf.find_plugin_mirror(None, [empty]) is None
    assert tf.find_plugin_mirror("off", [full]) is None
    assert tf.find_plugin_mirror(empty, [full]) == empty


def test_settings_of_terraform(tmp_path: Path) -> None:
    settings = load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_TF_PLUGIN_MIRROR": "off"})
    assert settings.terraform == "terraform" and settings.tf_plugin_mirror == "off"
    settings = load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_TF_PLUGIN_MIRROR": str(tmp_path)})
    assert settings.tf_plugin_mirror == tmp_path
    assert load_settings({"PAAS_DATA_DIR": str(tmp_path)}).tf_plugin_mirror is None
    assert load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_ENVIRONMENT": "aws"}).environment == "aws"
    with pytest.raises(SettingsError, match="PAAS_TF_PLUGIN_MIRROR"):
        load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_TF_PLUGIN_MIRROR": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="PAAS_TERRAFORM"):
        load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_TERRAFORM": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="PAAS_ENVIRONMENT"):
        load_settings({"PAAS_DATA_DIR": str(tmp_path), "PAAS_ENVIRONMENT": "gcp"})


# ---- reading Terraform ----
@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("  # terraform_data.this will be created", ("plan: terraform_data.this will be created", "changed")),
        (
            '  # aws_vpc_security_group_ingress_rule.app["8080 0.0.0.0/0"] will be destroyed',
            ('plan: aws_vpc_security_group_ingress_rule.app["8080 0.0.0.0/0"] will be destroyed', "changed"),
        ),
        ("  # aws_instance.this must be replaced", ("plan: aws_instance.this must be replaced", "changed")),
        ("  # aws_instance.this has changed", ("plan: aws_instance.this has changed", "ok")),
        ("        # (5 unchanged attributes hidden)", None),
        ("      + id     = (known after apply)", None),
        (
            "Plan: 1 to add, 0 to change, 0 to destroy.",
            ("Plan: 1 to add, 0 to change, 0 to destroy.", "changed"),
        ),
        ("Plan: 0 to add, 0 to change, 0 to destroy.", ("Plan: 0 to add, 0 to change, 0 to destroy.", "ok")),
        (
            "No changes. Your infrastructure matches the configuration.",
            ("No changes. Your infrastructure matches the configuration.", "ok"),
        ),
        ("terraform_data.this: Creating...", None),
        ("aws_instance.this: Still creating... [10s elapsed]", None),
        (
            "terraform_data.this: Creation complete after 0s [id=48a6]",
            ("terraform_data.this: Creation complete after 0s [id=48a6]", "changed"),
        ),
        (
            "Apply complete! Resources: 1 added, 0 changed, 0 destroyed.",
            ("Apply complete! Resources: 1 added, 0 changed, 0 destroyed.", "changed"),
        ),
        ("Destroy complete! Resources: 0 destroyed.", ("Destroy complete! Resources: 0 destroyed.", "ok")),
        ("Warning: Deprecated attribute", ("Warning: Deprecated attribute", "ok")),
        ('    "host_key" = "ssh-ed25519 AAAA"', None),
    ],
)
def test_progress_events(line: str, event: tuple[str, str] | None) -> None:
    assert tf.progress_event(line) == event


def test_error_summary_leaves_out_snippets_and_value_dumps() -> None:
    stderr = """
Error: Invalid value for variable

  on /data/terraform/ssh/run/x.tfvars.json line 3:
   3:   "address": "-oProxyCommand=sh",
    ├────────────────
    │ var.address is "-oProxyCommand=sh"

address must be a DNS name, an IPv4 or an IPv6 address (letters, digits, '.',
':' or '-', starting with a letter or digit).

This was checked by the validation rule at variables.tf:27,3-13.

Error: No value for required variable

  on variables.tf line 37:
  37: variable "user" {

The root module input variable "user" is not set, and has no default value.
"""
    assert tf.summarise_error(stderr) == (
        "Error: Invalid value for variable: address must be a DNS name, an IPv4 or an IPv6 address (letters, "
        "digits, '.', ':' or '-', starting with a letter or digit).; Error: No value for required variable: "
        'The root module input variable "user" is not set, and has no default value.'
    )
    assert tf.summarise_error("something else\n") is None


def test_outputs_leave_sensitive_ones_out() -> None:
    text = json.dumps(
        {
            "environment": {"sensitive": False, "type": "string", "value": "aws"},
            "instance_id": {"sensitive": False, "type": "string", "value": "i-0abc"},
            "password": {"sensitive": True, "type": "string", "value": "s3cr3t"},
            "hosts": {
                "sensitive": False,
                "value": {
                    "paas-aws": {
                        "address": "198.51.100.7",
                        "port": 22,
                        "user": "admin",
                        "private_key_file": "/k",
                        "connection": "ssh",
                        "groups": ["paas_hosts"],
                        "host_key": "ssh-ed25519 AAAA",
                        "python_interpreter": "/usr/bin/python3",
                    }
                },
            },
        }
    )
    hosts, outputs = tf.read_outputs(text)
    assert outputs == {"environment": "aws", "instance_id": "i-0abc"}
    assert hosts == [
        {
            "name": "paas-aws",
            "address": "198.51.100.7",
            "port": 22,
            "user": "admin",
            "connection": "ssh",
            "groups": ["paas_hosts"],
            "host_key": "ssh-ed25519 AAAA",
        }
    ]
    assert tf.read_outputs("{}") == ([], {})
    with pytest.raises(tf.TerraformError):
        tf.read_outputs("[]")


# ---- the executor ----
def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_executor_streams_lines_and_keeps_the_stderr_tail() -> None:
    lines: list[str] = []
    result = SubprocessExecutor().run(
        CommandRequest(
            python(
                "import sys\n"
                "for i in range(3): print(f'line {i}', flush=True)\n"
                "print('oops', file=sys.stderr)"
            ),
            env={"PATH": "/usr/bin:/bin"},
        ),
        on_line=lines.append,
        should_cancel=lambda: False,
    )
    assert result.ok and result.rc == 0
    assert lines == ["line 0", "line 1", "line 2"]
    assert result.stderr == "oops" and result.stdout == ""


def test_executor_captures_stdout_and_passes_only_the_given_environment(tmp_path: Path) -> None:
    result = SubprocessExecutor().run(
        CommandRequest(
            python("import json, os; print(json.dumps(sorted(os.environ)))"),
            env={"ONLY": "this"},
            cwd=tmp_path,
            capture=True,
        ),
        on_line=lambda line: pytest.fail("captured output is not streamed"),
        should_cancel=lambda: False,
    )
    assert result.ok
    assert [n for n in json.loads(result.stdout) if n != "LC_CTYPE"] == ["ONLY"]


def test_executor_reports_failures_and_missing_programs(tmp_path: Path) -> None:
    result = SubprocessExecutor().run(
        CommandRequest(python("import sys; sys.exit(3)")),
        on_line=lambda line: None,
        should_cancel=lambda: False,
    )
    assert result.status is RunStatus.FAILED and result.rc == 3
    result = SubprocessExecutor().run(
        CommandRequest((str(tmp_path / "missing"),)), on_line=lambda line: None, should_cancel=lambda: False
    )
    assert result.status is RunStatus.FAILED and result.message is not None
    assert result.message.startswith(f"cannot run {tmp_path / 'missing'}: ")


def test_executor_terminates_the_process_group_on_cancel(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = threading.Event()
    began = time.monotonic()
    result = SubprocessExecutor(kill_grace=5).run(
        CommandRequest(python(code)),
        on_line=lambda line: started.set(),
        should_cancel=started.is_set,
    )
    assert result.status is RunStatus.CANCELED
    assert time.monotonic() - began < 20
    child = int(marker.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_executor_stops_at_its_timeout() -> None:
    began = time.monotonic()
    result = SubprocessExecutor(kill_grace=5).run(
        CommandRequest(python("import time; time.sleep(60)"), timeout=0.5),
        on_line=lambda line: None,
        should_cancel=lambda: False,
    )
    assert result.status is RunStatus.TIMEOUT
    assert time.monotonic() - began < 10


def test_executor_makes_what_the_program_writes_private(tmp_path: Path) -> None:
    made = tmp_path / "made"
    result = SubprocessExecutor().run(
        CommandRequest(python(f"open({str(made)!r}, 'w').write('state')")),
        on_line=lambda line: None,
        should_cancel=lambda: False,
    )
    assert result.ok and made.stat().st_mode & 0o777 == 0o600
