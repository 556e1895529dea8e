"""paas.apps.service: a deploy's failure is read from the role's structured fact, never parsed."""

from __future__ import annotations

from paas.apps.service import deploy_failure
from paas.core.runs import RunStatus
from paas.execution.runner import PlaybookResult


def test_failure_comes_from_the_fact() -> None:
    result = PlaybookResult(
        RunStatus.FAILED,
        message="whatever the last task said",
        facts={
            "app_deploy_failure": {
                "step": "start",
                "reason": "the container did not keep running (the container exited with code 3)",
                "log_tail": "--- last 2 lines of paas-web-blue ---\nboom\nbye",
            }
        },
    )
    assert deploy_failure("web", result) == (
        "start",
        "deploy of 'web' failed at step 'start': the container did not keep running (the container "
        "exited with code 3)\n--- last 2 lines of paas-web-blue ---\nboom\nbye",
    )


def test_no_log_tail_no_newline() -> None:
    result = PlaybookResult(
        RunStatus.FAILED,
        facts={"app_deploy_failure": {"step": "clone", "reason": "no such ref", "log_tail": ""}},
    )
    assert deploy_failure("web", result) == ("clone", "deploy of 'web' failed at step 'clone': no such ref")


def test_a_message_alone_is_not_parsed() -> None:
    # A failure before the role ran (an unreachable host...) keeps the runner's words and no step, even
    # when they look like the role's message.
    result = PlaybookResult(RunStatus.FAILED, message="deploy of 'web' failed at step 'build': no")
    assert deploy_failure("web", result) == (None, "deploy of 'web' failed at step 'build': no")


def test_host_key_refusal_keeps_its_step() -> None:
    result = PlaybookResult(RunStatus.FAILED, failed_step="connect", message="host key changed for h1")
    assert deploy_failure("web", result) == ("connect", "host key changed for h1")


def test_canceled_and_timed_out_runs_have_neither() -> None:
    for status in (RunStatus.CANCELED, RunStatus.TIMEOUT):
        result = PlaybookResult(status, facts={"app_deploy_failure": {"step": "build", "reason": "x"}})
        assert deploy_failure("web", result) == (None, None)
