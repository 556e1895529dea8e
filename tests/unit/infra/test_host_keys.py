"""The host keys made on the hosts: what a host may report, the record of replacements and when it
applies, the known_hosts lines written from it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from paas.infra import host_keys
from paas.infra.host_keys import RotatedKey
from paas.infra.terraform import generate_host_key


def new_key() -> str:
    return " ".join(generate_host_key("comment")[1].split()[:2])


BOOTSTRAP, MADE = new_key(), new_key()
HOSTS = [{"name": "paas-aws", "connection": "ssh", "host_key": BOOTSTRAP}]


def test_a_reported_key_is_one_ed25519_key_without_its_comment() -> None:
    assert host_keys.parse_ed25519_key(f"{MADE} root@host") == MADE
    assert host_keys.parse_report({"host": "paas-aws", "public_key": MADE}) == ("paas-aws", MADE)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "not one line of text"),
        (f"{MADE}\n{BOOTSTRAP}", "not one line of text"),
        (f"{MADE}\r", "not one line of text"),
        ("ssh-ed25519", "not an 'ssh-ed25519 <base64>' key"),
        ("ecdsa-sha2-nistp256 AAAAE2VjZHNh", "not an 'ssh-ed25519 <base64>' key"),
        ("ssh-ed25519 not-base64!", "its key is not base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "not an ed25519 public key"),
        # One byte too many after the 32 of the key.
        (
            "ssh-ed25519 " + base64.b64encode(base64.b64decode(MADE.split()[1]) + b"x").decode(),
            "not an ed25519",
        ),
    ],
)
def test_anything_else_is_refused(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        host_keys.parse_ed25519_key(value)


@pytest.mark.parametrize(
    "report", ["ssh-ed25519 AAAA", {"public_key": MADE}, {"host": 1, "public_key": MADE}]
)
def test_a_report_names_its_host(report: object) -> None:
    with pytest.raises(ValueError, match="the report is not"):
        host_keys.parse_report(report)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
def test_fingerprint_is_the_one_ssh_keygen_shows(tmp_path: Path) -> None:
    (tmp_path / "key.pub").write_text(f"{MADE} comment\n")
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]

    assert host_keys.fingerprint(MADE) == shown


def test_records_round_trip_privately_and_unreadable_entries_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "terraform" / "aws" / "rotated_host_keys.json"
    host_keys.write_records(path, {"paas-aws": RotatedKey(MADE, BOOTSTRAP, "i-0abc")})

    assert path.stat().st_mode & 0o777 == 0o600
    assert host_keys.read_records(path) == {"paas-aws": RotatedKey(MADE, BOOTSTRAP, "i-0abc")}

    data = json.loads(path.read_text())
    data["bad"] = {"host_key": "ssh-rsa AAAA", "replaces": BOOTSTRAP}
    data["worse"] = "text"
    path.write_text(json.dumps(data))
    assert host_keys.read_records(path) == {"paas-aws": RotatedKey(MADE, BOOTSTRAP, "i-0abc")}
    path.write_text("{not json")
    assert host_keys.read_records(path) == {}
    host_keys.write_records(path, {})
    assert not path.exists()
    assert host_keys.read_records(path) == {}


@pytest.mark.parametrize(
    ("record", "applies"),
    [
        (RotatedKey(MADE, BOOTSTRAP, "i-0abc"), True),
        # The instance was replaced: it boots with the bootstrap key again.
        (RotatedKey(MADE, BOOTSTRAP, "i-0def"), False),
        # The outputs report another bootstrap key (a new environment, a key given by hand).
        (RotatedKey(MADE, new_key(), "i-0abc"), False),
    ],
)
def test_a_record_applies_to_the_same_instance_with_the_same_bootstrap_key(
    record: RotatedKey, applies: bool
) -> None:
    found = host_keys.applicable({"paas-aws": record, "gone": record}, HOSTS, "i-0abc")

    assert found == ({"paas-aws": record} if applies else {})


def test_keep_rotated_pins_the_key_made_on_the_host_and_drops_stale_records(tmp_path: Path) -> None:
    path = tmp_path / "rotated_host_keys.json"
    host_keys.write_records(
        path, {"paas-aws": RotatedKey(MADE, BOOTSTRAP, "i-0abc"), "gone": RotatedKey(MADE, BOOTSTRAP)}
    )
    hosts = [dict(h) for h in HOSTS]
    lines = [f"198.51.100.7 {BOOTSTRAP}", f"[192.0.2.1]:2222 {new_key()}"]
    other = lines[1]

    assert host_keys.keep_rotated(lines, hosts, "i-0abc", path) == ["paas-aws"]

    assert lines == [f"198.51.100.7 {MADE}", other]
    assert hosts[0]["host_key"] == MADE
    assert list(host_keys.read_records(path)) == ["paas-aws"]


def test_pin_reported_replaces_the_pinned_key_and_records_it(tmp_path: Path) -> None:
    known_hosts, records = tmp_path / "known_hosts", tmp_path / "rotated_host_keys.json"
    known_hosts.write_text(f"198.51.100.7 {BOOTSTRAP}\n")
    hosts = [dict(h) for h in HOSTS]

    task = host_keys.pin_reported(
        {"host": "paas-aws", "public_key": f"{MADE} paas-aws"},
        hosts=hosts,
        reported={"paas-aws": BOOTSTRAP},
        instance_id="i-0abc",
        known_hosts=known_hosts,
        records=records,
    )

    assert known_hosts.read_text() == f"198.51.100.7 {MADE}\n"
    assert host_keys.read_records(records) == {"paas-aws": RotatedKey(MADE, BOOTSTRAP, "i-0abc")}
    assert hosts[0]["host_key"] == MADE
    assert task == (
        f"Pin the host key made on paas-aws: {host_keys.fingerprint(MADE)} "
        f"in place of {host_keys.fingerprint(BOOTSTRAP)}"
    )


def test_pin_reported_refuses_a_host_without_a_pinned_line(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"198.51.100.7 {new_key()}\n")

    with pytest.raises(ValueError, match="no key of paas-aws in"):
        host_keys.pin_reported(
            {"host": "paas-aws", "public_key": MADE},
            hosts=[dict(h) for h in HOSTS],
            reported={"paas-aws": BOOTSTRAP},
            instance_id=None,
            known_hosts=known_hosts,
            records=tmp_path / "records.json",
        )
    assert not (tmp_path / "records.json").exists()
