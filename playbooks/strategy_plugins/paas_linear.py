# Mini PaaS — Ansible's linear strategy, accelerated by Mitogen when it is installed.
# MIT License
"""Linear strategy; runs modules through Mitogen's persistent interpreters when Mitogen is importable.

Mitogen cuts the per-task cost of Ansible several times over (no fork, upload and interpreter start per
task), which is most of a redeploy's wall time. Without Mitogen this is exactly Ansible's linear strategy.
Select another strategy with ANSIBLE_STRATEGY=linear to bypass it.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: paas_linear
short_description: Linear strategy, through Mitogen when available
description:
  - Ansible's C(linear) strategy. When the C(mitogen) package is installed, tasks run through Mitogen's
    connection multiplexer and persistent interpreters; otherwise plain C(linear) runs.
"""

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule  # noqa: F401
else:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):  # type: ignore[misc,valid-type]
        pass
