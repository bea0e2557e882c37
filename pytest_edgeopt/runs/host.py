"""Which host and which CI runner made a run: what a shared run history needs to tell runs
of the same kind of machine apart from the rest (ephemeral CI runners have a new hostname
every time, so the host name alone would never match two runs).

The machine class is a short hash of what decides latency on the host (CPU model, logical
cores, architecture, OS), or ``$EDGEOPT_MACHINE_CLASS`` when set (a team naming its runner
pools, e.g. ``gha-ubuntu-4core``). Runner ids come from ``$EDGEOPT_RUNNER_ID`` and the CI's
own variables (GitHub Actions, GitLab CI)."""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from typing import Any

MACHINE_CLASS_ENV = "EDGEOPT_MACHINE_CLASS"
#: Machine facts that make the class (see the module docstring).
CLASS_FACTS = ("cpu_model", "cores", "arch", "os")

#: (key in the record, environment variables tried in order).
RUNNER_VARIABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("runner", ("EDGEOPT_RUNNER_ID", "RUNNER_NAME", "CI_RUNNER_ID")),
    ("job", ("GITHUB_JOB", "CI_JOB_ID")),
    ("run", ("EDGEOPT_RUN_ID", "GITHUB_RUN_ID", "CI_PIPELINE_ID")),
)


def machine_class(machine: Mapping[str, Any]) -> str:
    """``$EDGEOPT_MACHINE_CLASS``, else ``arch-cores-HASH`` of :data:`CLASS_FACTS`."""
    named = os.environ.get(MACHINE_CLASS_ENV, "").strip()
    if named:
        return named
    facts = "|".join(str(machine.get(k)) for k in CLASS_FACTS)
    return f"{machine.get('arch')}-{machine.get('cores')}c-{hashlib.sha256(facts.encode()).hexdigest()[:10]}"


def host_identity(machine: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` (the host name) and ``machine_class`` of the host ``machine`` describes
    (:func:`pytest_edgeopt.runs.store.machine`)."""
    return {"node": machine.get("hostname") or platform.node(), "machine_class": machine_class(machine)}


def runner_ids() -> dict[str, str]:
    """The CI runner, job and run ids found in the environment (empty outside CI)."""
    out = {}
    for key, names in RUNNER_VARIABLES:
        for name in names:
            value = os.environ.get(name, "").strip()
            if value:
                out[key] = value
                break
    return out
