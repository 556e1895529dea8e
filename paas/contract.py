"""The platform's contract, defined once: ``roles/paas_contract/vars/main.yml``.

App names and reserved names, the job-id pattern, the app states, the steps a deploy fails at and the
port ranges are read from that file by the roles (through their ``paas_contract`` dependency), by this
module for the Python side, and through it by the OpenAPI document. Change them there, nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

CONTRACT_FILE = Path(__file__).resolve().parents[1] / "roles" / "paas_contract" / "vars" / "main.yml"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    contract = data.get("paas_contract") if isinstance(data, dict) else None
    if not isinstance(contract, dict):
        raise RuntimeError(f"{path} defines no paas_contract mapping")
    return contract


_CONTRACT = _load(CONTRACT_FILE)

# An app name: a DNS label short enough for container and file names.
NAME_PATTERN: str = _CONTRACT["name_pattern"]
# Names that are routes of the API (/apps/deploy): never app names.
RESERVED_NAMES: frozenset[str] = frozenset(_CONTRACT["reserved_names"])
JOB_ID_PATTERN: str = _CONTRACT["job_id_pattern"]
# Every state an app can be in, and the ones a live check (status.yml) reports.
APP_STATES: tuple[str, ...] = tuple(_CONTRACT["app_states"])
LIVE_STATES: frozenset[str] = frozenset(_CONTRACT["live_states"])
# The steps a deploy fails at (app_deploy_failure.step).
FAILURE_STEPS: tuple[str, ...] = tuple(_CONTRACT["failure_steps"])
PORT_MIN: int = int(_CONTRACT["port_min"])
PORT_MAX: int = int(_CONTRACT["port_max"])
# The blue/green containers' loopback ports: never an app's public port.
SLOT_PORT_MIN: int = int(_CONTRACT["slot_port_min"])
SLOT_PORT_MAX: int = int(_CONTRACT["slot_port_max"])

_NAME_RE = re.compile(NAME_PATTERN)
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)


def check_name(name: Any) -> str | None:
    """Why ``name`` is not a valid app name, or None."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        return f"must match {NAME_PATTERN}"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved"
    return None


def is_job_id(value: str) -> bool:
    return _JOB_ID_RE.fullmatch(value) is not None


def check_port(port: int) -> str | None:
    """Why ``port`` may not be an app's public port, or None."""
    if not PORT_MIN <= port <= PORT_MAX:
        return f"must be within {PORT_MIN}-{PORT_MAX}"
    if SLOT_PORT_MIN <= port <= SLOT_PORT_MAX:
        return f"is reserved for the platform's internal container ports ({SLOT_PORT_MIN}-{SLOT_PORT_MAX})"
    return None
