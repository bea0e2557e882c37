"""How an item ends, as pytest outcomes: skip (a tool refuses the model, a device is missing),
fail (the variant is broken or misses a budget: raised in the call phase, see :func:`broken`),
error (the harness, the machine or the test's set-up). docs/architecture.md has the table.

Messages stand alone: no traceback, no exception chain.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

#: The item's record (variant, target, device, model, built, details): what the JSON gets.
RECORD = pytest.StashKey[dict[str, Any]]()
#: Why the item's variant is broken (it failed to build, crashed, gave NaN): raised in the
#: call phase, so pytest reports a FAIL of the test, not an ERROR of its setup.
BROKEN = pytest.StashKey[str]()


def fail(message: str) -> NoReturn:
    """Fail the item with ``message`` alone: no traceback, and no "during handling of the
    above exception" chain when called inside an ``except`` block."""
    __tracebackhide__ = True
    raise pytest.fail.Exception(message, pytrace=False) from None


def skip(message: str) -> NoReturn:
    __tracebackhide__ = True
    raise pytest.skip.Exception(message) from None


def broken(request: pytest.FixtureRequest, message: str) -> Any:
    """The variant is broken, a property of the model: remember why and let setup finish, so
    the item FAILs in its call phase (:func:`pytest_runtest_call`) without running its body.
    ERROR stays for faults of the harness or the machine (a device that went offline)."""
    request.node.stash.setdefault(BROKEN, message)
    return None


def keep_details(request: pytest.FixtureRequest, exc: BaseException) -> None:
    """The tool's full text (traceback, MLIR dump, what TensorFlow printed) goes to the item's
    record (JSON, saved run); the terminal gets the root cause only."""
    details = getattr(exc, "details", None)
    if details:
        request.node.stash[RECORD]["details"] = str(details)


def unavailable(message: str, required: bool) -> NoReturn:
    """A target that cannot run: skip, or fail when the run requires it."""
    __tracebackhide__ = True
    if required:
        fail(message + " (required by --edgeopt-require)")
    skip(message)
