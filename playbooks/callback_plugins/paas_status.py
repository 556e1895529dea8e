# Mini PaaS — print status reports as JSON lines.
# MIT License
"""Print each entry of an ``app_status_report`` fact as one JSON line on stdout."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: paas_status
type: aggregate
short_description: Print Mini PaaS app status as one JSON line per app
description:
  - When a task sets the fact C(app_status_report) (a list), prints each entry as one JSON object on
    its own line, so a program can parse the output of C(playbooks/status.yml).
  - Enabled in the repository's ansible.cfg (C(callbacks_enabled = paas_status)).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "paas_status"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result):
        facts = result._result.get("ansible_facts") or {}
        report = facts.get("app_status_report")
        if isinstance(report, list):
            for entry in report:
                self._display.display(json.dumps(entry, sort_keys=True))
