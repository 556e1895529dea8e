#!/usr/bin/python
# Mini PaaS — the app records kept on each host.
# MIT License
"""Reserve, update and read the records of the apps on a host, under one host-wide lock."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_record
short_description: Keep the record of each app on a host and allocate its ports
description:
  - Each app has one record, C(<root>/apps/<name>/app.json), holding its public port, the two loopback
    ports of its blue and green containers, and what serves now (slot, commit, image).
  - Every change happens under one host-wide lock (C(<root>/.lock)) and is written atomically, so
    concurrent deploys of different apps never get the same ports.
  - Loopback ports are allocated once per app and kept, so they survive Docker and host restarts.
options:
  root:
    description: Directory of the records.
    type: path
    default: /var/lib/paas
  state:
    description:
      - C(reserved) checks the public port and allocates the slot ports, creating or updating the record.
      - C(active) records what serves now after a successful cutover.
      - C(query) returns the records (one app when O(name) is given) and changes nothing.
    type: str
    choices: [reserved, active, query]
    default: query
  name:
    description: App name.
    type: str
    default: ""
  name_pattern:
    description:
      - Regular expression of app names, matched against the whole name (C(paas_contract.name_pattern)).
      - Directories under C(<root>/apps) whose name does not match are not records.
    type: str
    required: true
  port:
    description: Public port of the app (reserved).
    type: int
  container_port:
    description: Port the app listens on in its container (reserved).
    type: int
  slot_port_min:
    description: First loopback port for app containers (reserved; C(paas_contract.slot_port_min) in the app role).
    type: int
  slot_port_max:
    description: Last loopback port for app containers (reserved; C(paas_contract.slot_port_max) in the app role).
    type: int
  network_pool:
    description:
      - Address range the apps' own Docker networks take their subnets from (reserved), e.g.
        C(172.30.0.0/16); each app gets one subnet of O(network_prefix), kept in its record.
      - Empty, no subnet is allocated (Docker picks one from its own pools, which hold about 30).
    type: str
    default: ""
  network_prefix:
    description: Prefix length of each app's subnet (a /28 holds the blue and green containers).
    type: int
    default: 28
  info:
    description: Descriptive fields stored with the record (repo, ref, health_path, context).
    type: dict
    default: {}
  active:
    description: What serves now (active); keys slot, commit, image, container.
    type: dict
    default: {}
author: Mini PaaS
"""

RETURN = r"""
record:
  description: The app's record after the change (reserved, active, or query with a name).
  type: dict
  returned: when name is given and the record exists
records:
  description: Every record on the host, sorted by name (query without a name).
  type: list
  returned: query without a name
"""

import errno
import fcntl
import ipaddress
import json
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

SLOTS = ("blue", "green")


@contextmanager
def host_lock(root):
    os.makedirs(root, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def record_path(root, name):
    return os.path.join(root, "apps", name, "app.json")


def load_records(root, name_re):
    """Every readable record on the host, keyed by app name (directories named by ``name_re``)."""
    records = {}
    apps_dir = os.path.join(root, "apps")
    try:
        names = sorted(os.listdir(apps_dir))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return records
        raise
    for name in names:
        if not name_re.fullmatch(name):
            continue
        try:
            with open(record_path(root, name), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name") == name:
            records[name] = data
    return records


def write_record(root, record):
    path = record_path(root, record["name"])
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o750, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".app.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def port_is_free(port, address):
    """Whether a listener could bind address:port now."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def ports_used_by(record):
    used = set()
    for key in ("port",):
        if isinstance(record.get(key), int):
            used.add(record[key])
    active = record.get("active") or {}
    if isinstance(active.get("port"), int):
        used.add(active["port"])
    for port in (record.get("slots") or {}).values():
        if isinstance(port, int):
            used.add(port)
    return used


def reserve(module, root, records):
    p = module.params
    name, port = p["name"], p["port"]
    low, high = p["slot_port_min"], p["slot_port_max"]
    if port is None or not 1024 <= port <= 65535:
        module.fail_json(msg="app_port must be within 1024-65535, got %s" % port)
    if p["container_port"] is None or not 1 <= p["container_port"] <= 65535:
        module.fail_json(msg="app_container_port must be within 1-65535, got %s" % p["container_port"])
    if low <= port <= high:
        module.fail_json(
            msg="app_port %d is reserved for the platform's internal container ports (%d-%d)" % (port, low, high)
        )
    for other in records.values():
        if other["name"] != name and port in (other.get("port"), (other.get("active") or {}).get("port")):
            module.fail_json(msg="app_port %d is already used by app '%s' on this host" % (port, other["name"]))
    current = records.get(name, {})
    serving_port = (current.get("active") or {}).get("port")
    if serving_port != port and not port_is_free(port, "0.0.0.0"):  # noqa: S104 - probing, not serving
        module.fail_json(msg="app_port %d is already in use on this host by another program" % port)

    slots = dict(current.get("slots") or {})
    if sorted(slots) != sorted(SLOTS) or not all(low <= v <= high for v in slots.values()):
        taken = set()
        for other in records.values():
            if other["name"] != name:
                taken |= ports_used_by(other)
        slots = {}
        for slot in SLOTS:
            for candidate in range(low, high + 1):
                if candidate in taken or candidate in slots.values():
                    continue
                if not port_is_free(candidate, "127.0.0.1"):
                    continue
                slots[slot] = candidate
                break
            else:
                module.fail_json(msg="no free internal port left in %d-%d for app '%s'" % (low, high, name))

    record = dict(current)
    record.update(
        name=name,
        port=port,
        container_port=p["container_port"],
        slots=slots,
        active=current.get("active"),
    )
    if p["network_pool"]:
        record["subnet"] = allocate_subnet(module, name, current, records)
    record.update(p["info"])
    return record


def allocate_subnet(module, name, current, records):
    """The app's subnet: the one it has when it lies in the pool, else the first one no app holds."""
    p = module.params
    try:
        pool = ipaddress.ip_network(p["network_pool"], strict=True)
    except ValueError as exc:
        module.fail_json(msg="app_network_pool must be a network such as 172.30.0.0/16: %s" % exc)
    if not pool.prefixlen <= p["network_prefix"] <= pool.max_prefixlen - 2:
        module.fail_json(
            msg="app_network_prefix must be within %d-%d for the pool %s"
            % (pool.prefixlen, pool.max_prefixlen - 2, pool)
        )

    def parsed(value):
        try:
            return ipaddress.ip_network(value, strict=True) if value else None
        except (TypeError, ValueError):
            return None

    mine = parsed(current.get("subnet"))
    taken = [n for n in (parsed(o.get("subnet")) for o in records.values() if o["name"] != name) if n]
    if (
        mine is not None
        and mine.version == pool.version
        and mine.subnet_of(pool)
        and mine.prefixlen == p["network_prefix"]
        and not any(mine.overlaps(t) for t in taken)
    ):
        return str(mine)
    for candidate in pool.subnets(new_prefix=p["network_prefix"]):
        if not any(candidate.overlaps(t) for t in taken if t.version == candidate.version):
            return str(candidate)
    module.fail_json(msg="no free subnet of /%d left in %s for app '%s'" % (p["network_prefix"], pool, name))


def activate(module, current):
    if not current:
        module.fail_json(msg="app '%s' has no record: reserve it first" % module.params["name"])
    active = dict(module.params["active"])
    if active.get("slot") not in SLOTS:
        module.fail_json(msg="active.slot must be blue or green")
    active["port"] = current["port"]
    previous = dict(current.get("active") or {})
    previous.pop("deployed_at", None)
    if previous == active:
        return current
    active["deployed_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = dict(current)
    record["active"] = active
    return record


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/var/lib/paas"),
            state=dict(type="str", choices=["reserved", "active", "query"], default="query"),
            name=dict(type="str", default=""),
            name_pattern=dict(type="str", required=True),
            port=dict(type="int"),
            container_port=dict(type="int"),
            slot_port_min=dict(type="int"),
            slot_port_max=dict(type="int"),
            network_pool=dict(type="str", default=""),
            network_prefix=dict(type="int", default=28),
            info=dict(type="dict", default={}),
            active=dict(type="dict", default={}),
        ),
        required_if=[("state", "reserved", ("slot_port_min", "slot_port_max"))],
        supports_check_mode=True,
    )
    p = module.params
    root, name, state = p["root"], p["name"], p["state"]
    try:
        name_re = re.compile(p["name_pattern"])
    except re.error as exc:
        module.fail_json(msg="name_pattern is not a regular expression: %s" % exc)
    if name and not name_re.fullmatch(name):
        module.fail_json(msg="app_name must match %s, got %r" % (p["name_pattern"], name))
    if state != "query" and not name:
        module.fail_json(msg="name is required with state=%s" % state)
    if state == "reserved" and (
        not 1024 <= p["slot_port_min"] <= p["slot_port_max"] <= 65535
        or p["slot_port_max"] - p["slot_port_min"] < 1
    ):
        module.fail_json(msg="slot_port_min and slot_port_max must be an increasing range within 1024-65535")

    if state == "query":
        records = load_records(root, name_re)
        if name:
            module.exit_json(changed=False, record=records.get(name), exists=name in records)
        module.exit_json(changed=False, records=[records[k] for k in sorted(records)])

    with host_lock(root) if not module.check_mode else _no_lock():
        records = load_records(root, name_re)
        current = records.get(name, {})
        record = reserve(module, root, records) if state == "reserved" else activate(module, current)
        changed = record != current
        if changed and not module.check_mode:
            write_record(root, record)
    module.exit_json(changed=changed, record=record)


@contextmanager
def _no_lock():
    yield


if __name__ == "__main__":
    main()
