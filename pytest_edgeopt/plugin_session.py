"""The edgeopt state of one pytest run: :class:`PluginSession`, kept in the config's stash
under :data:`SESSION` and registered as a plugin (as pytest-xdist registers its ``DSession``)
for the hooks that need the run's state: records from reports, the session's outputs at its
end, the terminal summary.

Light at start-up: every pytest run of a project with the plugin installed makes one. The
settings (which import the farm's health and lease modules), the builder session (numpy,
the targets) and the reports are made or imported on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_edgeopt.names import TargetRegistry
from pytest_edgeopt.options import CORE_OPTIONS, by_dest, check_names, farm_path, resolve, resolve_all

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.farm.inventory import Inventory
    from pytest_edgeopt.runs.outputs import Gate, OutputSettings
    from pytest_edgeopt.runs.recorder import Recorder
    from pytest_edgeopt.session import EdgeoptSession
    from pytest_edgeopt.settings import Settings
    from pytest_edgeopt.targets.base import Device, Discovery, Target

SESSION = pytest.StashKey["PluginSession"]()

_CORE = by_dest(CORE_OPTIONS)
#: Options whose use means the session writes outputs at its end (besides the JSON).
_OUTPUT_OPTIONS = ("edgeopt_save", "edgeopt_autosave", "edgeopt_csv", "edgeopt_compare", "edgeopt_compare_fail",
                   "edgeopt_html", "edgeopt_shard")


def plugin_session(config: pytest.Config) -> PluginSession:
    """The run's :class:`PluginSession` (made on first use: ``pytest_cmdline_main`` notes
    the xdist decision in it before ``pytest_configure`` configures it)."""
    session = config.stash.get(SESSION, None)
    if session is None:
        session = config.stash[SESSION] = PluginSession(config)
    return session


def is_xdist_worker() -> bool:
    return os.environ.get("PYTEST_XDIST_WORKER") is not None


class PluginSession:
    """What the run chose and found: the declared targets, the device inventory, the
    outputs and regression gate, the discovered devices, the records, and (on first use)
    the :class:`~pytest_edgeopt.settings.Settings` and the builder session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        #: pytest-xdist hands out work by device (``-n N`` with an inventory and no ``--dist``).
        self.by_device = False
        self.targets = TargetRegistry()
        self.farm: Inventory | None = None
        self.outputs: OutputSettings | None = None
        self.gate: Gate | None = None
        self.configured = False
        #: Where the ``--edgeopt-json`` file goes (absolute; ``None``: nowhere, or an xdist worker).
        self.json_path: Path | None = None
        self._recorder: Recorder | None = None
        self.discovered: dict[str, Discovery] = {}
        self.comparison: Any = None
        self.saved: Path | str | None = None
        self._settings: Settings | None = None
        self._edge: EdgeoptSession | None = None
        #: The remote cache's counters from each xdist worker (on the controller).
        self._worker_remote: list[dict[str, Any]] = []

    # -- start-up ------------------------------------------------------------------------------
    def configure(self) -> None:
        """Collect the declared targets (registering their markers), check every setting
        (a typo is a usage error now), load the inventory and prepare the outputs."""
        config = self.config
        specs = [s for found in reversed(config.hook.pytest_edgeopt_targets(config=config)) for s in found]
        self.targets = TargetRegistry(specs)
        for spec in self.targets:
            config.addinivalue_line("markers", spec.marker_line)
        values = resolve_all(config, CORE_OPTIONS)
        for opt in self.targets.options():
            resolve(config, opt)
        for dest in ("edgeopt_targets", "edgeopt_require"):
            self._check_targets(dest, values[dest])
        farm = farm_path(config)
        if farm is not None:
            from pytest_edgeopt.farm.inventory import InventoryError, load_inventory

            try:
                self.farm = load_inventory(farm)
            except InventoryError as exc:
                raise pytest.UsageError(f"pytest-edgeopt: --edgeopt-farm: {exc}") from None
        self.outputs = self._output_settings(values)
        if self.outputs is not None and not is_xdist_worker():
            from pytest_edgeopt.runs.outputs import prepare

            try:
                self.gate = prepare(self.outputs)
            except ValueError as exc:
                raise pytest.UsageError(f"pytest-edgeopt: {exc}") from None
        json_path = values["edgeopt_json"]
        if json_path and not is_xdist_worker():
            self.json_path = Path(config.invocation_params.dir, json_path)
        self.configured = True

    def _check_targets(self, dest: str, names: tuple[str, ...] | None) -> None:
        opt = _CORE[dest]
        if not names:
            return
        try:
            check_names(names, self.targets.names, "target")
        except argparse.ArgumentTypeError as exc:
            if config_given(self.config, dest):
                raise pytest.UsageError(f"{opt.flag}: {exc}") from None
            raise pytest.UsageError(f"ini {opt.ini} = {self.config.getini(dest)!r}: {exc}") from None

    def _output_settings(self, values: dict[str, Any]) -> OutputSettings | None:
        """What the session leaves behind besides the JSON; ``None`` when nothing is asked
        for (most runs: then :mod:`pytest_edgeopt.runs.outputs` is not even imported)."""
        if not any(values[name] for name in _OUTPUT_OPTIONS):
            return None
        from pytest_edgeopt.runs.outputs import OutputSettings

        config = self.config

        def path(value: Any) -> Path | None:
            return None if not value else Path(config.invocation_params.dir, value)

        storage: str | Path | None = values["edgeopt_storage"]
        remote: str | None = None
        if isinstance(storage, str) and "://" in storage:  # a shared history, read through a local mirror
            from pytest_edgeopt.storage.history import MIRRORS
            from pytest_edgeopt.storage.location import mirror_dir

            remote = storage
            storage = mirror_dir(config.rootpath / MIRRORS, remote)
        shard = values["edgeopt_shard"]
        return OutputSettings(
            remote=remote, shard=(shard.index, shard.count) if shard else None,
            run_id=values["edgeopt_run_id"] or _env_run_id() if shard else None,
            storage=Path(config.rootpath, storage) if storage else config.rootpath / ".edgeopt" / "runs",
            save=values["edgeopt_save"], autosave=bool(values["edgeopt_autosave"]), csv=path(values["edgeopt_csv"]),
            html=path(values["edgeopt_html"]), compare=values["edgeopt_compare"],
            tolerances=tuple(str(t) for t in values["edgeopt_compare_fail"]),
            ab_budget_s=values["edgeopt_ab_budget"],
        )

    # -- made on first use ---------------------------------------------------------------------
    @property
    def recorder(self) -> Recorder:
        """The records so far, and the JSON file kept current (made with the first record)."""
        if self._recorder is None:
            from pytest_edgeopt.runs.recorder import Recorder

            self._recorder = Recorder(self.json_path, lambda: self.settings.to_dict())
        return self._recorder

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._recorder.records if self._recorder is not None else []

    @property
    def settings(self) -> Settings:
        """The run's settings (checked in :meth:`configure`), made on first use."""
        if self._settings is None:
            from pytest_edgeopt.settings import Settings

            self._settings = Settings.from_config(self.config, self.targets.options())
        return self._settings

    @property
    def edge(self) -> EdgeoptSession:
        """The builder and measurements, made on first use (not at start-up: it imports
        the builder, the targets and numpy)."""
        if self._edge is None:
            from pytest_edgeopt.session import EdgeoptSession

            self._edge = EdgeoptSession(self.settings, make_target=self.make_target, progress=progress(self.config))
        return self._edge

    def make_target(self, name: str, device: Device) -> Target:
        from pytest_edgeopt.targets.base import TargetUnavailable

        target: Target | None = self.config.hook.pytest_edgeopt_make_target(config=self.config, name=name, device=device)
        if target is None:
            raise TargetUnavailable(f"no plugin provides target {name!r} for device {device.id!r}")
        return target

    def discover(self, target: str) -> Discovery:
        """``target``'s devices, asked of the plugins once per run."""
        if target not in self.discovered:
            from pytest_edgeopt.targets.base import Discovery

            found = self.config.hook.pytest_edgeopt_discover(config=self.config, target=target)
            self.discovered[target] = found if found is not None else Discovery(
                (), missing=f"no plugin discovers {target!r} devices")
        return self.discovered[target]

    # -- hooks (this object is registered as a plugin) -----------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """``--edgeopt-shard=I/N``: keep this shard's items (:mod:`pytest_edgeopt.storage.shards`)."""
        shard = resolve(config, _CORE["edgeopt_shard"])
        if shard is None:
            return
        from pytest_edgeopt.storage.shards import select

        mine, others = select(items, shard, self.farm, self.targets.device_kinds())
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = mine

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Records reach this process with the reports (on the xdist controller, the
        workers' reports bring theirs)."""
        record = getattr(report, "edgeopt", None)
        if record is not None:
            self.recorder.add(record)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """A shared variant cache (``--edgeopt-cache-dir=s3://...``): start opening its store
        on a background thread now, so the first build's lookup finds it open
        (:mod:`pytest_edgeopt.storage.opening`); not on the xdist controller, which builds nothing."""
        cache = resolve(self.config, _CORE["edgeopt_cache_dir"])
        if self.configured and isinstance(cache, str) and "://" in cache \
                and not self.config.pluginmanager.has_plugin("dsession"):
            from pytest_edgeopt.storage.opening import open_in_background

            open_in_background(cache)

    @pytest.hookimpl(tryfirst=True)  # before --junitxml writes its file: the gate adds suite properties
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self._flush_remote()
            if self.configured and not is_xdist_worker():
                self._finish(session)
        finally:
            if self._edge is not None:
                self._edge.close()

    def _finish(self, session: pytest.Session) -> None:
        """The session's outputs: comparison (while targets are open), JSON, saved run, CSV, HTML."""
        if self.outputs is None:
            if self.json_path is not None:  # even a run without measurements writes its (empty) document
                self.recorder.save()
            return
        from pytest_edgeopt.runs import outputs

        doc = self.recorder.document()
        edge = self.edge
        junit = [p for p in self.config.pluginmanager.get_plugins() if hasattr(p, "add_global_property")]
        done = outputs.finish(doc, self.outputs, self.gate, edge, self.config.rootpath, edge.progress,
                              properties=junit[0].add_global_property if junit else None)
        self.recorder.save(doc)
        self.saved = done.saved
        if done.comparison is not None:
            self.comparison = done.comparison
            if done.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.outputs.html is not None and doc["measurements"]:
            from pytest_edgeopt.runs.html import write_html

            write_html(self.outputs.html, doc, outputs.history(self.outputs))

    def _remote_counters(self) -> dict[str, Any] | None:
        cache = self._edge.builder.cache if self._edge is not None else None
        if cache is None or cache.remote is None:
            return None
        return {"url": cache.remote.url, "stats": cache.remote.stats.to_dict(),
                "hits_local": cache.hits_local, "built": cache.built}

    def _flush_remote(self) -> None:
        """Wait for the remote cache's background uploads; an xdist worker then sends its
        counters to the controller (``workeroutput``, read in :meth:`pytest_testnodedown`)."""
        cache = self._edge.builder.cache if self._edge is not None else None
        if cache is None:
            return
        cache.flush()
        counters = self._remote_counters()
        workeroutput = getattr(self.config, "workeroutput", None)
        if counters is not None and workeroutput is not None:
            workeroutput["edgeopt_remote"] = counters

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist, on the controller: a worker finished; keep its remote cache counters."""
        counters = getattr(node, "workeroutput", {}).get("edgeopt_remote")
        if counters is not None:
            self._worker_remote.append(counters)

    def _remote_line(self) -> str | None:
        """The remote cache's summary line, summed over this process and the xdist workers."""
        mine = self._remote_counters()
        parts = [*self._worker_remote, *([mine] if mine is not None else [])]
        if not parts:
            return None
        from pytest_edgeopt.storage.remote_cache import TransferStats, summary_line

        stats = TransferStats()
        for part in parts:
            stats.add(part["stats"])
        return summary_line(parts[0]["url"], stats, sum(p["hits_local"] for p in parts), sum(p["built"] for p in parts))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if is_xdist_worker():
            return
        remote_line = self._remote_line()
        if remote_line is not None:
            terminalreporter.write_line(remote_line)
        if not self.records:
            return
        from pytest_edgeopt.runs import terminal as report
        from pytest_edgeopt.runs.recommend import recommendation_lines

        tr, records, comparison = terminalreporter, self.records, self.comparison
        lines = report.table_lines(records, comparison)
        if not lines:
            return
        _section(tr, "edgeopt summary", lines)
        _section(tr, "edgeopt recommendation", recommendation_lines(records))
        _section(tr, "edgeopt devices", report.device_lines(records, self.settings.require))
        if self.settings.json_path is not None:
            tr.write_line(f"edgeopt: measurements written to {self.settings.json_path}")
        if comparison is not None:
            _section(tr, "edgeopt comparison", comparison.lines(), red=comparison.failed, green=not comparison.failed)
        if self.saved is not None:
            tr.write_line(f"edgeopt: run saved to {self.saved}")
        if self.outputs is not None and self.outputs.html is not None:
            tr.write_line(f"edgeopt: HTML report written to {self.outputs.html}")
        if self.outputs is not None and self.outputs.csv is not None:
            tr.write_line(f"edgeopt: measurements exported to {self.outputs.csv}")


def _section(tr: Any, title: str, lines: list[str], **markup: bool) -> None:
    if lines:
        tr.section(title, **markup)
        for line in lines:
            tr.write_line(line)


def _env_run_id() -> str | None:
    from pytest_edgeopt.storage.shards import run_id_from_env

    return run_id_from_env()


def config_given(config: pytest.Config, dest: str) -> bool:
    return config.getoption(dest) not in (None, [])


def progress(config: pytest.Config) -> Callable[[str], None]:
    """A callable writing one line through the terminal reporter, with capture suspended,
    so a long build never looks hung."""

    def say(message: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        capman = config.pluginmanager.get_plugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with ctx:
            if config.get_verbosity() > 0:  # each result has its own line, which pytest starts again
                tr.ensure_newline()
                tr.write_line(f"[edgeopt] {message}")
                return
            # Without -v, pytest writes a file's results on one line after its name; ending that
            # line the reporter's way (ensure_newline) makes it print the name again before the
            # next result, once per progress line. Break the line ourselves: results go on below.
            tw = config.get_terminal_writer()
            if tw.width_of_current_line:
                tw.line()
            tw.line(f"[edgeopt] {message}")

    return say
