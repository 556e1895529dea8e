"""Host keys made on the hosts, which replace the bootstrap keys an environment's outputs report.

For ``aws`` the server generates the instance's first (bootstrap) host key and cloud-init installs it
from user data, so it is pinned before the first connection. ``playbooks/host.yml`` then replaces it
with a key generated on the host (role ``sshd_host_key``) and reports the new public key over that
verified connection; the server pins it in ``<data>/known_hosts/<env>`` in place of the bootstrap key.

Terraform's outputs keep reporting the bootstrap key, so the server remembers each replacement in
``<data>/terraform/<env>/rotated_host_keys.json`` (0600)::

    {"<host>": {"host_key": "ssh-ed25519 <new>", "replaces": "ssh-ed25519 <bootstrap>",
                "instance_id": "i-..." or null}}

and pins the new key instead of the bootstrap one after every later apply, for as long as the record
applies: the outputs still report the same bootstrap key for that host and the same ``instance_id``. A
replaced instance boots with the bootstrap key again (cloud-init installs it at its first boot), so its
record no longer applies: the bootstrap key is pinned, and host.yml replaces it again.

One host per environment rotates (aws has one): the runner keeps one value per captured fact name.
The report is checked before anything is written: one ``ssh-ed25519`` key of the right length on one
line, for a known ssh host, so a host cannot add lines (other hosts, wildcards) to known_hosts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from paas.core.store import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotatedKey:
    """A key made on a host, and what it replaced."""

    host_key: str
    replaces: str
    instance_id: str | None = None


def parse_ed25519_key(value: Any) -> str:
    """``"ssh-ed25519 <base64>"`` from a public key line (a comment is dropped); ValueError unless it
    is exactly one well-formed ed25519 key on one line."""
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ValueError("not one line of text")
    fields = value.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ValueError("not an 'ssh-ed25519 <base64>' key")
    try:
        base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError("its key is not base64") from None
    try:
        key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise ValueError("its key is not an ed25519 public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("its key is not an ed25519 public key")
    return f"ssh-ed25519 {fields[1]}"


def fingerprint(key: str) -> str:
    """The SHA256 fingerprint ssh-keygen -l shows: ``SHA256:<base64, unpadded>``."""
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_report(report: Any) -> tuple[str, str]:
    """``(host, key)`` from the fact ``sshd_host_key_report`` ({host, public_key}); ValueError if not."""
    if not isinstance(report, Mapping) or not isinstance(report.get("host"), str):
        raise ValueError("the report is not {host, public_key}")
    return str(report["host"]), parse_ed25519_key(report.get("public_key"))


def read_records(path: Path) -> dict[str, RotatedKey]:
    """The recorded replacements (none when the file is missing; entries that cannot be read are
    left out, so their hosts get the bootstrap key pinned)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (the bootstrap keys are pinned): %s", path, exc)
        return {}
    records: dict[str, RotatedKey] = {}
    for name, entry in data.items() if isinstance(data, dict) else []:
        try:
            instance = entry.get("instance_id")
            records[str(name)] = RotatedKey(
                host_key=parse_ed25519_key(entry.get("host_key")),
                replaces=str(entry["replaces"]),
                instance_id=instance if isinstance(instance, str) else None,
            )
        except (AttributeError, KeyError, ValueError) as exc:
            log.warning("%s: the entry of %s is left out: %s", path, name, exc)
    return records


def write_records(path: Path, records: Mapping[str, RotatedKey]) -> None:
    """Replace the record file (removed when there is nothing to record)."""
    if not records:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {name: asdict(record) for name, record in sorted(records.items())}
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def applicable(
    records: Mapping[str, RotatedKey], hosts: Iterable[Mapping[str, Any]], instance_id: str | None
) -> dict[str, RotatedKey]:
    """The records that still apply: their host reports the key they replaced, on the same instance."""
    reported = {str(h["name"]): str(h.get("host_key") or "") for h in hosts if h.get("connection") == "ssh"}
    return {
        name: record
        for name, record in records.items()
        if reported.get(name) == record.replaces and record.instance_id == instance_id
    }


def replace_key(lines: Iterable[str], old: str, new: str) -> tuple[list[str], int]:
    """known_hosts ``lines`` (``<pattern> <type> <base64>``) with the key ``old`` replaced by ``new``,
    and how many lines had it."""
    suffix = " " + old
    result, count = [], 0
    for line in lines:
        if old and line.endswith(suffix):
            line = line[: -len(old)] + new
            count += 1
        result.append(line)
    return result, count


def keep_rotated(
    lines: list[str], hosts: Iterable[dict[str, Any]], instance_id: str | None, records_path: Path
) -> list[str]:
    """After an apply: where a host's bootstrap key was replaced by a key made on it (and the record
    still applies), pin that key instead, in ``lines`` and the host's ``host_key`` (both changed in
    place). Records that no longer apply are dropped. Returns the names of those hosts."""
    hosts = list(hosts)
    records = read_records(records_path)
    kept = applicable(records, hosts, instance_id)
    for host in hosts:
        record = kept.get(str(host["name"]))
        if record is not None:
            lines[:], _ = replace_key(lines, str(host["host_key"]), record.host_key)
            host["host_key"] = record.host_key
    if kept != records:
        write_records(records_path, kept)
    return sorted(kept)


def pin_reported(
    report: Any,
    *,
    hosts: Iterable[dict[str, Any]],
    reported: Mapping[str, str],
    instance_id: str | None,
    known_hosts: Path,
    records: Path,
) -> str:
    """Pin the key a host reported it made (``sshd_host_key_report``) in ``known_hosts`` in place of
    the key pinned for it, and record it; ValueError when it cannot be. Returns the event's task."""
    name, key = parse_report(report)
    host = next((h for h in hosts if h["name"] == name and h.get("connection") == "ssh"), None)
    bootstrap = reported.get(name, "")
    if host is None or not bootstrap:
        raise ValueError(f"{name!r} is not an ssh host with a pinned key")
    pinned = str(host["host_key"])
    lines = [line for line in known_hosts.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines, found = replace_key(lines, pinned, key)
    if not found:
        raise ValueError(f"no key of {name} in {known_hosts} to replace")
    # The record first: if the known_hosts write fails, the next provision still pins the new key.
    recorded = read_records(records)
    recorded[name] = RotatedKey(key, replaces=bootstrap, instance_id=instance_id)
    write_records(records, recorded)
    write_atomically(known_hosts, "".join(f"{line}\n" for line in lines))
    host["host_key"] = key
    if key == pinned:
        return f"Pin the host key made on {name}: {fingerprint(key)} (pinned already)"
    return f"Pin the host key made on {name}: {fingerprint(key)} in place of {fingerprint(pinned)}"
