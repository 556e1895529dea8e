"""Live state: what the hosts say about apps (``playbooks/status.yml``), and how a report sets an app's
state and health.

A status run returns ``{name: report entry, or None when the app is not on the host}``, or None when
the check itself failed (the truth is unknown). The app role reports an app asked for by name that is
not deployed as an empty ``app_status_report`` (then fails): no message is parsed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from paas.apps.model import App, health_of
from paas.contract import LIVE_STATES
from paas.core.runs import TaskEvent
from paas.execution.runner import PlaybookRequest
from paas.infra.target import Target

log = logging.getLogger(__name__)

STATUS_PLAYBOOK = "playbooks/status.yml"
STATUS_CHECK_TIMEOUT = 300.0
REPORT_FACT = "app_status_report"

Live = dict[str, dict[str, Any] | None]


class LiveStatus:
    """Runs status checks against the current target."""

    def __init__(self, target: Target) -> None:
        self._target = target

    def check(
        self,
        names: list[str] | None,
        *,
        ident: str | None = None,
        on_event: Callable[[TaskEvent], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Live | None:
        """Live status of some apps (None: every app on the hosts)."""
        extravars: dict[str, Any] = {"app_name": names[0]} if names and len(names) == 1 else {}
        result = self._target.run_app_playbook(
            PlaybookRequest(
                ident=ident or f"status-{threading.get_ident()}",
                playbook=STATUS_PLAYBOOK,
                extravars=extravars,
                capture_facts=(REPORT_FACT,),
                keep_artifacts=False,
                timeout=STATUS_CHECK_TIMEOUT,
            ),
            on_event=on_event or (lambda event: None),
            should_cancel=should_cancel or (lambda: False),
        )
        report = result.facts.get(REPORT_FACT)
        if not result.ok and report is None:
            log.warning("status check failed: %s", (result.message or "")[:500])
            return None
        entries = {str(e.get("name")): e for e in (report or []) if isinstance(e, dict)}
        wanted = names if names is not None else list(entries)
        return {name: entries.get(name) for name in wanted}


def apply_live(app: App, live: Live | None) -> None:
    """Set an app's state and health from a live check (unknown truth: nothing serves for sure only if
    nothing ever did)."""
    if live is None or app.name not in live:
        if app.state == "pending":
            app.state = "failed"
        return
    entry = live[app.name]
    if entry is None:
        app.state = "failed"
        return
    state = entry.get("state")
    app.state = state if state in LIVE_STATES else "failed"
    app.health = health_of(entry)
    if app.served:
        app.served.update(
            commit=entry.get("commit") or app.served.get("commit"),
            image=entry.get("image") or app.served.get("image"),
            slot=entry.get("slot") or app.served.get("slot"),
        )
