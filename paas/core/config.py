"""Settings of the control plane: a frozen object read from environment variables, once.

=========================  ===========================================  ====================================
Variable                   Default                                      Meaning
=========================  ===========================================  ====================================
``PAAS_DATA_DIR``          ``$XDG_DATA_HOME/paas`` or                   Where the server keeps its database
                           ``~/.local/share/paas``                      (``paas.json``), the generated API
                                                                        token (``api-token``) and the
                                                                        ansible-runner artifacts of recent
                                                                        jobs (``artifacts/<job id>/``).
``PAAS_API_TOKEN``         (unset: generated at first start into        Bearer token every route but
                           ``<data>/api-token``, mode 0600)             ``GET /healthz`` requires.
``PAAS_INVENTORY``         ``<repo>/inventory/local.yml``               Ansible inventory of the app hosts.
``PAAS_ENVIRONMENT``       ``local``                                    Environment ``POST /infra/provision``
                                                                        uses when its body names none:
                                                                        ``local``, ``ssh`` or ``aws``
                                                                        (``terraform/<env>/``).
``PAAS_TERRAFORM``         ``terraform`` (on ``PATH``)                  The Terraform executable.
``PAAS_TF_PLUGIN_MIRROR``  (auto: ``/opt/tf-plugins`` or another        Filesystem provider mirror Terraform
                           known plugin dir that holds providers)       installs providers from; ``off``:
                                                                        none, the public registry only.
``PAAS_WORKERS``           ``4``                                        Jobs run at the same time (jobs of
                                                                        one app always run one by one).
``PAAS_JOB_TIMEOUT``       ``1800``                                     Seconds a job may run before it is
                                                                        stopped and marked failed.
``PAAS_MONITOR_INTERVAL``  ``30``                                       Seconds between two health checks
                                                                        of every app; ``0`` disables them.
``PAAS_KEEP_JOBS``         ``200``                                      Finished jobs kept in the database,
                                                                        and job artifact dirs kept on disk.
``PAAS_MAX_EVENTS``        ``500``                                      Task events kept per job (the last
                                                                        ones).
``PAAS_PUBLIC_HOST``       ``localhost``                                Host name used in the apps' ``url``.
``PAAS_EXTRA_VARS``        ``{}``                                       JSON object of extra variables given
                                                                        to every playbook run, below the
                                                                        job's own (e.g.
                                                                        ``{"app_health_retries": 5}``).
``PAAS_SHUTDOWN_GRACE``    ``30``                                       Seconds running jobs may take to
                                                                        finish on SIGTERM/SIGINT before
                                                                        they are canceled.
``PAAS_HTTP_THREADS``      ``8``                                        Threads serving HTTP requests.
``PAAS_HTTP_CONNECTIONS``  ``1000``                                     Open HTTP connections at most
                                                                        (waitress ``connection_limit``).
``PAAS_HTTP_TIMEOUT``      ``30``                                       Seconds an idle or slow connection
                                                                        is kept (waitress
                                                                        ``channel_timeout``).
``PAAS_MAX_QUEUED``        ``100``                                      Jobs waiting in the queue at most;
                                                                        more: 429 with ``Retry-After``.
``PAAS_MAX_APPS``          ``500``                                      Apps at most; more: 409
                                                                        ``too_many_apps``.
``PAAS_ALLOW_FILE_REPOS``  ``0``                                        ``1``: deploys may use ``file://``
                                                                        repositories (under
                                                                        ``PAAS_FILE_REPO_ROOTS`` only).
``PAAS_FILE_REPO_ROOTS``   (none)                                       Colon-separated directories that
                                                                        ``file://`` repositories must lie
                                                                        in (real paths, symlinks resolved).
``PAAS_REPO_HOSTS``        (any)                                        Comma-separated host names repos
                                                                        may come from; empty: any host.
``PAAS_BUILD_TIMEOUT``     ``900``                                      Seconds the clone and build of a
                                                                        deploy may take together.
``PAAS_APP_MEMORY``        ``512m``                                     Default memory limit of an app's
                                                                        container (``resources.memory``).
``PAAS_APP_CPUS``          ``1.0``                                      Default CPU limit
                                                                        (``resources.cpus``).
``PAAS_APP_PIDS``          ``512``                                      Default process limit
                                                                        (``resources.pids``).
=========================  ===========================================  ====================================
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret
ENVIRONMENTS = ("local", "ssh", "aws")
MIRROR_OFF = ("off", "none")
# A container memory size in megabytes or gigabytes, at least 6m (Docker's own minimum): the setting's
# rule and the deploy request's (paas.apps.spec).
MEMORY_PATTERN = r"^(([6-9]|[1-9][0-9]{1,6})[mM]|[1-9][0-9]{0,3}[gG])$"
MEMORY_RE = re.compile(MEMORY_PATTERN.strip("^$"))


class SettingsError(ValueError):
    """An environment variable holds a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the server. Build it with :func:`load_settings`."""

    data_dir: Path
    api_token: str | None = field(default=None, repr=False)
    inventory: Path = REPO_ROOT / "inventory" / "local.yml"
    environment: str = "local"
    workers: int = 4
    job_timeout: float = 1800.0
    monitor_interval: float = 30.0
    keep_jobs: int = 200
    max_events: int = 500
    public_host: str = "localhost"
    extra_vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    shutdown_grace: float = 30.0
    http_threads: int = 8
    repo_root: Path = REPO_ROOT
    # The Terraform executable: a name looked up on PATH when a job runs, or a path.
    terraform: str = "terraform"
    # A filesystem provider mirror; None: detect one of the known dirs when a job runs; "off": none.
    tf_plugin_mirror: Path | str | None = None
    http_connections: int = 1000
    http_timeout: float = 30.0
    max_queued: int = 100
    max_apps: int = 500
    allow_file_repos: bool = False
    # Real paths (symlinks resolved) that file:// repositories must lie in.
    file_repo_roots: tuple[Path, ...] = ()
    # Host names repositories may come from (lower case); empty: any.
    repo_hosts: tuple[str, ...] = ()
    build_timeout: float = 900.0
    app_memory: str = "512m"
    app_cpus: float = 1.0
    app_pids: int = 512

    @property
    def db_path(self) -> Path:
        return self.data_dir / "paas.json"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def token_path(self) -> Path:
        return self.data_dir / TOKEN_FILE

    @property
    def terraform_dir(self) -> Path:
        """``<data>/terraform/``: per environment, Terraform's state and data dir."""
        return self.data_dir / "terraform"

    @property
    def known_hosts_dir(self) -> Path:
        """``<data>/known_hosts/``: one pinned known_hosts file per environment."""
        return self.data_dir / "known_hosts"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_DATA_HOME", "")
    if xdg:
        return Path(xdg) / "paas"
    return Path(environ.get("HOME") or Path.home()) / ".local" / "share" / "paas"


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _integer(environ: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("PAAS_DATA_DIR") or default_data_dir(env)).expanduser().resolve()
    token = env.get("PAAS_API_TOKEN") or None
    if token is not None and (len(token) < 16 or any(c.isspace() for c in token)):
        raise SettingsError("PAAS_API_TOKEN must be at least 16 characters without whitespace")
    environment = env.get("PAAS_ENVIRONMENT") or "local"
    if environment not in ENVIRONMENTS:
        raise SettingsError(f"PAAS_ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    raw_vars = env.get("PAAS_EXTRA_VARS", "").strip() or "{}"
    try:
        extra_vars = json.loads(raw_vars)
    except ValueError:
        raise SettingsError("PAAS_EXTRA_VARS must be a JSON object") from None
    if not isinstance(extra_vars, dict):
        raise SettingsError("PAAS_EXTRA_VARS must be a JSON object")
    terraform = env.get("PAAS_TERRAFORM", "").strip() or "terraform"
    if "/" in terraform and not Path(terraform).expanduser().is_file():
        raise SettingsError(f"PAAS_TERRAFORM={terraform!r} is not a file")
    raw_mirror = env.get("PAAS_TF_PLUGIN_MIRROR", "").strip()
    mirror: Path | str | None = None
    if raw_mirror.lower() in MIRROR_OFF:
        mirror = "off"
    elif raw_mirror:
        mirror = Path(raw_mirror).expanduser().resolve()
        if not mirror.is_dir():
            raise SettingsError(f"PAAS_TF_PLUGIN_MIRROR={raw_mirror!r} is not a directory")
    memory = env.get("PAAS_APP_MEMORY", "").strip() or "512m"
    if not MEMORY_RE.fullmatch(memory):
        raise SettingsError(f"PAAS_APP_MEMORY must be a size such as 512m or 1g, got {memory!r}")
    allow_raw = env.get("PAAS_ALLOW_FILE_REPOS", "").strip().lower()
    if allow_raw not in ("", "0", "1", "false", "true", "no", "yes"):
        raise SettingsError(f"PAAS_ALLOW_FILE_REPOS must be 0 or 1, got {allow_raw!r}")
    roots = tuple(
        Path(part).expanduser().resolve()
        for part in env.get("PAAS_FILE_REPO_ROOTS", "").split(":")
        if part.strip()
    )
    hosts = tuple(h.strip().lower() for h in env.get("PAAS_REPO_HOSTS", "").split(",") if h.strip())
    return Settings(
        data_dir=data_dir,
        api_token=token,
        inventory=Path(env.get("PAAS_INVENTORY") or REPO_ROOT / "inventory" / "local.yml")
        .expanduser()
        .resolve(),
        environment=environment,
        workers=_integer(env, "PAAS_WORKERS", 4, minimum=1),
        job_timeout=_number(env, "PAAS_JOB_TIMEOUT", 1800.0, minimum=1),
        monitor_interval=_number(env, "PAAS_MONITOR_INTERVAL", 30.0, minimum=0),
        keep_jobs=_integer(env, "PAAS_KEEP_JOBS", 200, minimum=1),
        max_events=_integer(env, "PAAS_MAX_EVENTS", 500, minimum=1),
        public_host=env.get("PAAS_PUBLIC_HOST") or "localhost",
        extra_vars=MappingProxyType(extra_vars),
        shutdown_grace=_number(env, "PAAS_SHUTDOWN_GRACE", 30.0, minimum=0),
        http_threads=_integer(env, "PAAS_HTTP_THREADS", 8, minimum=1),
        terraform=str(Path(terraform).expanduser()) if "/" in terraform else terraform,
        tf_plugin_mirror=mirror,
        http_connections=_integer(env, "PAAS_HTTP_CONNECTIONS", 1000, minimum=1),
        http_timeout=_number(env, "PAAS_HTTP_TIMEOUT", 30.0, minimum=1),
        max_queued=_integer(env, "PAAS_MAX_QUEUED", 100, minimum=1),
        max_apps=_integer(env, "PAAS_MAX_APPS", 500, minimum=1),
        allow_file_repos=allow_raw in ("1", "true", "yes"),
        file_repo_roots=roots,
        repo_hosts=hosts,
        build_timeout=_number(env, "PAAS_BUILD_TIMEOUT", 900.0, minimum=1),
        app_memory=memory.lower(),
        app_cpus=_number(env, "PAAS_APP_CPUS", 1.0, minimum=0.01),
        app_pids=_integer(env, "PAAS_APP_PIDS", 512, minimum=16),
    )


def read_token(settings: Settings) -> str | None:
    """The API token clients must send: ``PAAS_API_TOKEN``, else the one generated into the data dir."""
    if settings.api_token:
        return settings.api_token
    try:
        token = settings.token_path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_token(settings: Settings) -> tuple[str, bool]:
    """The API token, generating ``<data>/api-token`` (mode 0600) when there is none.

    Returns the token and whether it was generated now.
    """
    existing = read_token(settings)
    if existing:
        return existing, False
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(settings.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process won the race (or the file is empty): use what is there.
        again = read_token(settings)
        if again:
            return again, False
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token, True
