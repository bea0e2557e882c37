"""pytest11 entry point ``edgeopt``: the hooks and fixtures of the core, each reading pytest
objects, calling plain code and writing back.

The run's state is one :class:`~pytest_edgeopt.plugin_session.PluginSession` in the config's
stash (``SESSION``), registered as a plugin. Options are the table in
:mod:`pytest_edgeopt.options`; targets come from plugins (the built-in ones are the
``edgeopt-cpu``, ``edgeopt-android`` and ``edgeopt-edgetpu`` entry points) through
:mod:`pytest_edgeopt.hookspec`, so the core names none. Nothing here imports tensorflow or
numpy: every pytest run of a project with the plugin installed loads this module, so the
builder session, the targets and the reports are imported when an item or an output needs
them (``python benchmarks/startup.py`` measures it).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_edgeopt.options import CORE_OPTIONS, add_options, by_dest, resolve
from pytest_edgeopt.outcomes import BROKEN, RECORD, broken, fail, keep_details, skip, unavailable
from pytest_edgeopt.plugin_session import plugin_session

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from pytest_edgeopt.measurement import Measurement
    from pytest_edgeopt.model import ModelUnderTest
    from pytest_edgeopt.parametrize import Case
    from pytest_edgeopt.session import EdgeoptSession
    from pytest_edgeopt.variants.builder import BuiltVariant

# Per-item state: the item's measurement, its record (variant, target, device, model,
# built) and the builder's clock when its setup began.
MEASUREMENT = pytest.StashKey["Measurement"]()
BUILD_START = pytest.StashKey[float]()

MARKERS = (
    "edgeopt_variants(*names): the variants to parametrize over (default: every variant; unsupported ones skip with the reason)",
    "edgeopt_budget(**budgets): budgets checked on the item's measurement after the test body "
    "(keywords as measurement.check: min_size_reduction, max_accuracy_drop, min_speedup, ...)",
    "edgeopt_options(**knobs): variant knobs for this test (sparsity, clusters, finetune_epochs, learning_rate, "
    "batch_size, calibration_samples, loss, seed, float_nodes: node names or \"auto\", float_nodes_max_drop)",
)

# Since TF 2.16 tf.keras is Keras 3 unless this is set before tensorflow is imported;
# tfmot only works with Keras 2 (tf_keras). Set it now, before any conftest imports
# tensorflow; a user who wants Keras 3 sets TF_USE_LEGACY_KERAS=0 explicitly.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


# -- start-up ---------------------------------------------------------------------------------
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_edgeopt import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser, CORE_OPTIONS)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Iterator[Any]:
    """Note, before pytest-xdist turns ``-n N`` into ``--dist load``, whether a run with a
    device inventory left the distribution mode to us (see :mod:`pytest_edgeopt.farm.scheduling`)."""
    if resolve(config, by_dest(CORE_OPTIONS)["edgeopt_farm"]):
        from pytest_edgeopt.farm.scheduling import schedules_by_device

        plugin_session(config).by_device = schedules_by_device(config.option, has_farm=True)
    return (yield)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    session = plugin_session(config)
    session.configure()
    config.pluginmanager.register(session, "edgeopt-session")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With a device inventory and ``-n N`` (no ``--dist``), hand out work by device."""
    session = plugin_session(config)
    if not session.by_device or session.farm is None:
        return None
    from pytest_edgeopt.farm.scheduling import device_scheduler

    return device_scheduler(config, log, session.farm, session.targets.device_kinds())


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: tell each worker how work is handed out (a worker's
    own ``dist`` option reads ``no``)."""
    node.workerinput["edgeopt_dist"] = node.config.option.dist


# -- collection -------------------------------------------------------------------------------
def _wants_edgeopt(metafunc: pytest.Metafunc) -> bool:
    """Whether edgeopt parametrizes the item: it asks for a variant, or has a budget or
    variants marker. Checked here, so most items of most runs import nothing more."""
    if "edgeopt_case" not in metafunc.fixturenames:
        return False
    if any(name in metafunc.fixturenames for name in ("optimized_model", "measurement")):
        return True
    return any(metafunc.definition.get_closest_marker(m) for m in ("edgeopt_budget", "edgeopt_variants"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _wants_edgeopt(metafunc):
        return
    from pytest_edgeopt.parametrize import cases, parametrize

    session = plugin_session(metafunc.config)
    parametrize(metafunc, cases(metafunc, session.settings, session.targets, session.discover))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    load = getattr(config, "workerinput", {}).get("edgeopt_dist") in ("load", "worksteal")
    marked = any(item.get_closest_marker(m) for item in items
                 for m in ("edgeopt_variants", "edgeopt_budget", "edgeopt_options"))
    if not (load or marked):  # most runs: nothing to check or sort, nothing imported
        return
    from pytest_edgeopt.parametrize import check_markers, costliest_builds_first

    if marked:
        check_markers(items)
    if load:
        costliest_builds_first(items)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Budgets declared in ``edgeopt.toml`` / ``[tool.edgeopt]`` (:mod:`pytest_edgeopt.budgets.collection`)."""
    if file_path.name not in ("edgeopt.toml", "pyproject.toml"):
        return None
    from pytest_edgeopt.budgets.collection import collect_file

    return collect_file(file_path, parent)  # type: ignore[no-any-return]


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def edgeopt_model() -> ModelUnderTest:
    """The model under test. Override it in your conftest.py (see the README)."""
    pytest.fail(
        "pytest-edgeopt: no edgeopt_model fixture is defined. Define one in conftest.py:\n\n"
        "    import pytest\n"
        "    from pytest_edgeopt import ModelUnderTest\n\n"
        "    @pytest.fixture(scope=\"session\")\n"
        "    def edgeopt_model():\n"
        "        return ModelUnderTest(name=\"my-model\", model=\"path/to/model.keras\",\n"
        "                              representative_data=..., train_data=(x, y), eval_data=(x, y))\n",
        pytrace=False,
    )


@pytest.fixture
def edgeopt_case(request: pytest.FixtureRequest) -> Case | None:
    """This item's variant/target/device (``None`` for items that are not parametrized by edgeopt).

    An item whose target has no device skips here, before anything is built (or fails
    when the target is required)."""
    case = getattr(request, "param", None)
    session = plugin_session(request.config)
    if case is not None:
        request.node.stash[RECORD] = {
            "variant": case.variant, "target": case.target,
            "device": (case.device.label or case.device.id) if case.device else None, "model": None,
        }
        request.node.stash[BUILD_START] = session.edge.builder.seconds
    if case is not None and case.target and (case.device is None or case.missing):
        unavailable(f"{case.target}: {case.missing}", case.target in session.settings.require)
    return case


@pytest.fixture
def edgeopt_session(request: pytest.FixtureRequest) -> EdgeoptSession:
    """The session's builder and measurements (for advanced use)."""
    return plugin_session(request.config).edge


def _model(request: pytest.FixtureRequest) -> ModelUnderTest:
    from pytest_edgeopt.model import ModelUnderTest

    mut = request.getfixturevalue("edgeopt_model")
    if not isinstance(mut, ModelUnderTest):
        pytest.fail(f"pytest-edgeopt: the edgeopt_model fixture returned {type(mut).__name__}; "
                    "return a pytest_edgeopt.ModelUnderTest", pytrace=False)
    return mut


def _test_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("edgeopt_options"))):
        opts.update(marker.kwargs)
    if opts.get("float_nodes") == "auto":  # auto aims at the test's own accuracy budget when it has one
        budget = request.node.get_closest_marker("edgeopt_budget")
        if budget is not None and "max_accuracy_drop" in budget.kwargs:
            opts.setdefault("float_nodes_max_drop", budget.kwargs["max_accuracy_drop"])
    return opts


def _named(variant: str, exc: Exception) -> str:
    """The message of a builder's exception with the variant named once (builders start
    theirs with it; the registry's skip reasons too)."""
    text = str(exc)
    return text if text.startswith(f"{variant}:") or text.startswith(f"{variant} ") else f"{variant}: {text}"


@pytest.fixture
def optimized_model(request: pytest.FixtureRequest, edgeopt_case: Case | None) -> BuiltVariant:
    """The item's variant, built (or taken from the cache): name, path of the .tflite, size
    and gzip-9 size in bytes, full recipe, build time in seconds, and ``from_cache``."""
    if edgeopt_case is None:
        pytest.fail("pytest-edgeopt: optimized_model is parametrized by pytest-edgeopt; this item has no variant",
                    pytrace=False)
    from pytest_edgeopt.model import ModelError
    from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

    mut = _model(request)
    request.node.stash[RECORD]["model"] = mut.name
    try:
        built = plugin_session(request.config).edge.build(mut, edgeopt_case.variant, _test_options(request))
    except VariantUnavailable as exc:
        keep_details(request, exc)
        skip(_named(edgeopt_case.variant, exc))
    except VariantBuildError as exc:
        keep_details(request, exc)
        return broken(request, f"{mut.name} {_named(edgeopt_case.variant, exc)}")  # type: ignore[no-any-return]
    except ModelError as exc:  # the test's own set-up (its edgeopt_model) is wrong
        fail(f"{mut.name} {edgeopt_case.variant}: {exc}")
    request.node.stash[RECORD]["built"] = {
        "size_bytes": built.size_bytes, "compressed_size_bytes": built.compressed_size_bytes,
        "from_cache": built.from_cache, "build_seconds": built.build_seconds, "recipe": dict(built.recipe),
    }
    request.node.stash[RECORD]["model_key"] = built.key  # finds the file again for a later A/B
    return built


@pytest.fixture
def measurement(request: pytest.FixtureRequest, edgeopt_case: Case | None,
                optimized_model: BuiltVariant) -> Measurement:
    """The item's variant measured on the item's target, against fp32 on the same target."""
    case = edgeopt_case
    assert case is not None and case.target is not None and case.device is not None
    from pytest_edgeopt.model import ModelError
    from pytest_edgeopt.targets.base import ModelIncompatible, TargetError, TargetUnavailable, VariantBroken
    from pytest_edgeopt.variants.registry import VariantBuildError, VariantUnavailable

    if optimized_model is None:  # broken at build: the call phase fails the item
        return None
    edge = plugin_session(request.config).edge
    required = case.target in edge.settings.require
    mut = _model(request)
    try:
        target = edge.target(case.target, case.device)
        m = edge.measure(mut, optimized_model, target)
    except ModelIncompatible as exc:  # the variant's fault, not a missing device: never "required"
        skip(f"{case.variant} on {case.target}: {exc}")
    except TargetUnavailable as exc:
        unavailable(f"{case.variant} on {case.target}: {exc}", required)
    except (VariantBroken, VariantBuildError) as exc:
        return broken(request, f"{mut.name} {case.variant} on {case.target}: {exc}")  # type: ignore[no-any-return]
    except VariantUnavailable as exc:
        return broken(request, f"{mut.name}: the fp32 baseline cannot be built: {exc}")  # type: ignore[no-any-return]
    except (TargetError, ModelError) as exc:
        fail(f"{mut.name} {case.variant} on {case.target}: {exc}")
    request.node.stash[MEASUREMENT] = m
    # JUnit XML properties, for CI dashboards that read them.
    d = m.summary()
    request.node.user_properties.extend(
        (f"edgeopt_{k}", d[k]) for k in ("variant", "target", "device", "size_bytes", "compressed_size_bytes",
                                          "size_reduction", "p50_ms", "p90_ms", "speedup", "metric", "accuracy_drop",
                                          "source_metric")
        if d[k] is not None)
    return m


@pytest.fixture(autouse=True)
def _edgeopt_budget_marker(request: pytest.FixtureRequest, edgeopt_case: Case | None) -> None:
    """Items with ``edgeopt_budget`` but no ``measurement`` argument still get measured."""
    if edgeopt_case is not None and edgeopt_case.target and request.node.get_closest_marker("edgeopt_budget"):
        request.getfixturevalue("measurement")


# -- checking budgets after the body, and recording ---------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True
    why = item.stash.get(BROKEN, None)
    if why is not None:  # the body is not run: it would only meet a missing variant
        fail(why)
    result = yield
    m = item.stash.get(MEASUREMENT, None)
    if m is not None:
        for marker in item.iter_markers("edgeopt_budget"):
            m.check(**marker.kwargs)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    record = item.stash.get(RECORD, None)
    if record is not None and (rep.when == "call" or (rep.when == "setup" and not rep.passed)):
        from pytest_edgeopt.runs.recorder import record_for_report

        m = item.stash.get(MEASUREMENT, None)
        builder = plugin_session(item.config).edge.builder
        # A plain dict: it travels from xdist workers to the controller with the report.
        rep.edgeopt = record_for_report(  # type: ignore[attr-defined]
            record, test=item.nodeid, outcome=rep.outcome, longrepr=rep.longrepr,
            build_wall_s=builder.seconds - item.stash.get(BUILD_START, builder.seconds),
            measurement=m.to_dict() if m is not None else None)
    return rep
