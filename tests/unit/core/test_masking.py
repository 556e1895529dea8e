"""paas.core.masking, and the deploy job that masks the app's env values in what it reports."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from support.fakes import FakeExecutor, FakeRunner, call_wsgi

from paas.api.routes import create_app
from paas.core.config import Settings
from paas.core.masking import MASK, Masker
from paas.core.runs import TaskEvent

TOKEN = "unit-test-token-0123456789"


def test_values_of_six_characters_or_more_are_masked() -> None:
    mask = Masker(["s3cret-value", "short", "abcdef", ""])
    assert mask("x=s3cret-value y=short z=abcdef") == f"x={MASK} y=short z={MASK}"
    assert mask.optional(None) is None
    assert not Masker(["12345"]) and Masker(["123456"])


def test_a_value_holding_another_is_masked_whole() -> None:
    mask = Masker(["abcdef", "xxabcdefyy"])
    assert mask("1 xxabcdefyy 2 abcdef") == f"1 {MASK} 2 {MASK}"


def test_a_failed_deploy_masks_env_values_in_its_message_events_and_app(tmp_path: Path) -> None:
    secret = "Zq{#S3c{{ret}}%}Pw-4711"
    runner = FakeRunner()
    runner.fail_deploy["web"] = ("start", f"crashed\n--- last 50 lines ---\nPASSWORD={secret}\nbye")
    real_deploy = runner._deploy

    def deploy_printing_the_env(request: Any, name: str, on_event: Any) -> Any:
        on_event(TaskEvent(at="now", task=f"echo {secret}", host="localhost", result="ok"))
        return real_deploy(request, name, on_event)

    runner._deploy = deploy_printing_the_env  # type: ignore[method-assign]
    settings = Settings(data_dir=tmp_path, api_token=TOKEN, monitor_interval=0, workers=1, shutdown_grace=1)
    app = create_app(settings, runner=runner, executor=FakeExecutor())
    try:
        body = {
            "name": "web",
            "repo": "https://git.example.com/web.git",
            "port": 18080,
            "container_port": 5000,
            "env": {"PASSWORD": secret, "SHORT": "bye"},
        }
        reply = call_wsgi(app, "POST", "/apps/deploy", body=body, token=TOKEN)
        assert reply.status == 202, reply.json()
        job_id = reply.json()["job"]["id"]
        deadline = time.monotonic() + 5
        while (job := call_wsgi(app, "GET", f"/jobs/{job_id}", token=TOKEN).json())["status"] not in (
            "failed",
            "succeeded",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status = call_wsgi(app, "GET", "/apps/web/status", token=TOKEN).json()
        assert job["status"] == "failed" and job["failed_step"] == "start"
        assert f"PASSWORD={MASK}" in job["message"] and "\nbye" in job["message"]
        assert any(e["task"] == f"echo {MASK}" for e in job["events"])
        everything = json.dumps([job, status])
        assert secret not in everything
        assert status["last_deploy"]["message"] == job["message"]
    finally:
        app.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
