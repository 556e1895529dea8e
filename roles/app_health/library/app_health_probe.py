#!/usr/bin/python
# Mini PaaS — HTTP health probe run on the app host.
# MIT License
"""Probe an HTTP endpoint from the host until it answers as expected, recording every attempt."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_health_probe
short_description: Probe an HTTP endpoint until healthy, recording every attempt
description:
  - Sends GET requests to O(url) from the managed host, at most O(retries) times, O(delay) seconds
    apart, until the response status is one of O(status_codes) (and the body matches O(content) when
    given). Stops at the first healthy answer.
  - Built on the same HTTP client as M(ansible.builtin.uri), but returns every attempt with its status
    code and latency in milliseconds, which C(uri) with C(until) cannot (its C(elapsed) is whole seconds
    and only the last attempt is returned).
  - Redirects are not followed: a 3xx answer is judged by its own status code.
  - Read-only; runs in check mode.
options:
  url:
    description: URL to probe (http or https).
    type: str
    required: true
  status_codes:
    description: Status codes that mean healthy.
    type: list
    elements: int
    default: [200]
  content:
    description: Regular expression the body (first 64 KiB) must match; empty to skip.
    type: str
    default: ""
  timeout:
    description: Seconds one attempt may take.
    type: float
    default: 5
  retries:
    description: Maximum number of attempts.
    type: int
    default: 30
  delay:
    description: Seconds between attempts.
    type: float
    default: 1
  fail_unhealthy:
    description: Fail the task when no attempt was healthy.
    type: bool
    default: true
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
author: Mini PaaS
"""

RETURN = r"""
healthy:
  description: Whether an attempt was healthy.
  type: bool
  returned: always
status:
  description: Status code of the last attempt, or null when it got no HTTP answer.
  type: int
  returned: always
attempts:
  description: Every attempt, in order.
  type: list
  elements: dict
  returned: always
  contains:
    code: {description: HTTP status code, null without an answer, type: int}
    latency_ms: {description: Time to the status line and body in milliseconds, type: float}
    error: {description: Why the attempt was unhealthy, empty when healthy, type: str}
checked_at:
  description: UTC time the last attempt ended, ISO 8601.
  type: str
  returned: always
"""

import re
import time
from datetime import datetime, timezone
from urllib.error import HTTPError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

BODY_LIMIT = 64 * 1024


def probe_once(module, url, timeout, status_codes, content):
    """One GET. Returns the attempt record (code, latency_ms, error)."""
    start = time.monotonic()
    code = None
    body = b""
    error = ""
    try:
        response = open_url(
            url,
            method="GET",
            timeout=timeout,
            follow_redirects="none",
            validate_certs=module.params["validate_certs"],
            http_agent="mini-paas-health-probe",
        )
        code = response.status
        body = response.read(BODY_LIMIT)
    except HTTPError as exc:
        code = exc.code
        try:
            body = exc.read(BODY_LIMIT)
        except Exception:  # noqa: BLE001 - the body of an error answer is optional
            body = b""
    except Exception as exc:  # noqa: BLE001 - every transport failure is an unhealthy attempt
        error = "%s: %s" % (type(exc).__name__, getattr(exc, "reason", exc))
    latency_ms = round((time.monotonic() - start) * 1000, 1)
    if code is not None:
        if code not in status_codes:
            error = "status %d not in %s" % (code, status_codes)
        elif content and not re.search(content, body.decode("utf-8", "replace")):
            error = "body does not match %r" % content
    return {"code": code, "latency_ms": latency_ms, "error": error}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            status_codes=dict(type="list", elements="int", default=[200]),
            content=dict(type="str", default=""),
            timeout=dict(type="float", default=5),
            retries=dict(type="int", default=30),
            delay=dict(type="float", default=1),
            fail_unhealthy=dict(type="bool", default=True),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not re.match(r"^https?://[^\s]+$", p["url"]):
        module.fail_json(msg="url must be an http:// or https:// URL, got %r" % p["url"])
    if p["retries"] < 1 or p["timeout"] <= 0 or p["delay"] < 0:
        module.fail_json(msg="retries must be at least 1, timeout positive and delay not negative")
    if p["content"]:
        try:
            re.compile(p["content"])
        except re.error as exc:
            module.fail_json(msg="content is not a valid regular expression: %s" % exc)

    attempts = []
    healthy = False
    for number in range(p["retries"]):
        if number:
            time.sleep(p["delay"])
        attempt = probe_once(module, p["url"], p["timeout"], p["status_codes"], p["content"])
        attempts.append(attempt)
        if not attempt["error"]:
            healthy = True
            break

    result = dict(
        changed=False,
        healthy=healthy,
        status=attempts[-1]["code"],
        attempts=attempts,
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if not healthy and p["fail_unhealthy"]:
        last = attempts[-1]
        module.fail_json(
            msg="%s is unhealthy after %d attempt(s): %s" % (p["url"], len(attempts), last["error"]),
            **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
