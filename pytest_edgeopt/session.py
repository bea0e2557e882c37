"""The per-process state of a pytest-edgeopt run: settings, the builder, targets, the
worker process that runs native code, and the measurements made so far (each variant
measured once per target, fp32 once per target)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pytest_edgeopt.farm.health import HealthMonitor
from pytest_edgeopt.farm.lease import DeviceLeases
from pytest_edgeopt.fidelity import (
    PAYLOAD,
    Fidelity,
    FidelityError,
    FidelityRequest,
    SourceRun,
    Tolerance,
    from_json,
    has_state_ops,
    output_difference,
    run_source,
    to_json,
)
from pytest_edgeopt.measure import check_collapse, check_eval_shape, observe, output_classes
from pytest_edgeopt.measurement import Measurement
from pytest_edgeopt.model import ModelError, ModelUnderTest, fingerprint_arrays, n_samples, score
from pytest_edgeopt.results import Observation
from pytest_edgeopt.settings import Settings
from pytest_edgeopt.targets.base import HOST, Device, ModelIncompatible, Target, VariantBroken
from pytest_edgeopt.variants.builder import Builder, BuiltVariant
from pytest_edgeopt.variants.cache import VariantCache, key_of
from pytest_edgeopt.variants.registry import BASELINE, VARIANTS, resolve_options
from pytest_edgeopt.workers.pool import MEASURE_TIMEOUT_S, MeasureCrashed, WorkerPool, activity

#: Set to 1 to build and measure in the pytest process itself (no worker process): for
#: comparing the cost of workers (benchmarks/workers.py) and for debugging a builder.
IN_PROCESS_ENV = "EDGEOPT_IN_PROCESS"


class EdgeoptSession:
    """Builds and measures on demand, remembering results for the rest of the session.

    ``make_target(name, device)`` creates a Target (the plugin routes it to the
    ``pytest_edgeopt_make_target`` hook); targets are closed by :meth:`close`. Each
    measurement on a device holds the device's lease (:mod:`pytest_edgeopt.farm.lease`: one
    measurement at a time per device across processes) and starts with a health check
    (:mod:`pytest_edgeopt.farm.health`); building never holds a lease.

    Before a model's first measurement its fp32 ``.tflite`` is checked against the source
    model (:meth:`fidelity`, :mod:`pytest_edgeopt.fidelity`): beyond the tolerance every
    measurement of the model raises FidelityError; a stateful model is evaluated as one
    sequence.

    Cache misses are built, and host-CPU measurements run, in one worker process
    (:mod:`pytest_edgeopt.workers`), started on first need and replaced after a crash;
    ``in_process=True`` (or ``EDGEOPT_IN_PROCESS=1``) runs them here instead.
    """

    def __init__(self, settings: Settings, make_target: Callable[[str, Device], Target],
                 progress: Callable[[str], None] = lambda msg: None, in_process: bool | None = None) -> None:
        self.settings = settings
        self.progress = progress
        if in_process is None:
            in_process = os.environ.get(IN_PROCESS_ENV, "") not in ("", "0")
        self.workers: WorkerPool | None = None if in_process else WorkerPool(progress)
        remote = None
        if settings.cache_url is not None:
            from pytest_edgeopt.storage.remote_cache import RemoteCache

            remote = RemoteCache.at(settings.cache_url, progress)
        cache = VariantCache(settings.cache_dir, rebuild=settings.rebuild, remote=remote)
        self.builder = Builder(cache, progress, self.workers)
        self._make_target = make_target
        self.leases = DeviceLeases(settings.lease_dir, settings.lease_timeout_s, progress)
        self.health = HealthMonitor(settings.health, progress)
        self._targets: dict[tuple[str, str], Target] = {}
        self._observed: dict[tuple[str, str, str], Observation | BaseException] = {}
        self._fidelity: dict[tuple[str, str], tuple[Fidelity | None, bool] | BaseException] = {}
        self._repairing = False  # rebuilding a crashed variant with float_nodes: no repair of the repairs

    def target(self, name: str, device: Device) -> Target:
        key = (name, device.id)
        if key not in self._targets:
            target = self._make_target(name, device)
            use_workers = getattr(target, "use_workers", None)  # targets that run native code here
            if callable(use_workers):
                use_workers(self.workers)
            self._targets[key] = target
        return self._targets[key]

    def find_target(self, name: str, device_label: str | None) -> Target | None:
        """An open target by name and device label (or id), e.g. for re-measuring."""
        for (tname, _), target in self._targets.items():
            if tname == name and device_label in (target.device.label, target.device.id, None):
                return target
        return None

    def build(self, mut: ModelUnderTest, variant: str, options: Mapping[str, Any] | None = None) -> BuiltVariant:
        token = activity.set(f"{mut.name} {variant}")
        try:
            return self.builder.build(mut, variant, options)
        finally:
            activity.reset(token)

    def observe(self, mut: ModelUnderTest, built: BuiltVariant, target: Target, sequence: bool = False) -> Observation:
        """``built`` measured on ``target``, once per session (a failure is remembered too);
        ``sequence``: the model carries state across calls (see :func:`pytest_edgeopt.measure.observe`)."""
        key = (built.key, target.name, target.device.id)
        done = self._observed.get(key)
        if isinstance(done, BaseException):
            raise done
        if done is None:
            where = target.name if target.device.label is None else f"{target.name}/{target.device.label}"
            self.progress(f"measuring {mut.name} {built.name} on {where}")
            label = activity.set(f"{mut.name} {built.name} on {where}")
            try:
                with self.leases.hold(target.device, f"{mut.name} {built.name} on {where}") as lease:
                    conditions = self.health.check(target)
                    done = observe(target, built, mut, self.settings.latency, sequence)
                    if lease is not None:  # when, and after how long a wait, the device was ours
                        lease = {**lease, "until": time.time()}
                extras = {"conditions": conditions, "lease": lease}
                done = replace(done, extras={**done.extras, **{k: v for k, v in extras.items() if v is not None}})
            except Exception as exc:
                explained = self._explain(mut, built, target, sequence, exc)
                self._observed[key] = explained
                if explained is exc:
                    raise
                raise explained from None
            finally:
                activity.reset(label)
            self._observed[key] = done
        return done

    def _explain(self, mut: ModelUnderTest, built: BuiltVariant, target: Target, sequence: bool,
                 exc: Exception) -> Exception:
        """A broken variant's failure with its root cause (:mod:`pytest_edgeopt.variants.float_nodes`):
        NaN/inf outputs with the first node producing them; a node that failed to invoke, with
        the variant rebuilt keeping it (then also what computes its operands) in float and
        measured. Anything else is returned as it is."""
        from pytest_edgeopt.variants import float_nodes as fn

        if isinstance(exc, fn.NonFiniteOutputs) and exc.node is None:
            try:
                request = fn.ProbeRequest(built.path.resolve(), exc.samples)
                node = (request.run() if self.workers is None else
                        self.workers.call(request, timeout_s=MEASURE_TIMEOUT_S, crashed=MeasureCrashed))
            except Exception as probe_exc:  # the probe is best effort: the failure stands without it
                self.progress(f"{mut.name} {built.name}: the NaN/inf probe failed ({type(probe_exc).__name__})")
                node = None
            kept = built.recipe.get("float_nodes_chosen" if built.recipe.get("float_nodes") == "auto" else "float_nodes")
            return fn.NonFiniteOutputs(exc.variant, exc.found, exc.samples, node,
                                       "float_nodes" in VARIANTS[built.name].knobs, built.path, kept or ())
        failure = None if isinstance(exc, MeasureCrashed) else fn.parse_invoke_failure(str(exc))
        if failure is None:
            return exc
        text = f"{built.name} crashed at invoke: {failure.describe()}"
        if built.name == BASELINE:
            return VariantBroken(text)
        if "float_nodes" not in VARIANTS[built.name].knobs:
            return VariantBroken(f"{text}. {built.name} cannot keep nodes in float; remedy: int8 with "
                                 "float_nodes (the session rebuilds and measures it there), or dynamic_range")
        if self._repairing:
            return VariantBroken(text)
        where = target.name if target.device.label is None else f"{target.name}/{target.device.label}"
        return VariantBroken(fn.repair_lines(text, self._repair(mut, built, target, sequence, failure), where))

    def _repair(self, mut: ModelUnderTest, built: BuiltVariant, target: Target, sequence: bool,
                failure: Any) -> list[Any]:
        """``built`` rebuilt with the failing node (then also the nodes computing its operands)
        kept in float, each measured on ``target`` until one runs within 0.01 of fp32's metric."""
        from pytest_edgeopt.variants import float_nodes as fn

        knobs = {k: built.recipe[k] for k in VARIANTS[built.name].knobs if k in built.recipe}
        if knobs.get("float_nodes") == "auto":
            kept = tuple(built.recipe.get("float_nodes_chosen") or ())
            knobs.pop("float_nodes_max_drop", None)
        else:
            kept = tuple(knobs.get("float_nodes") or ())
        try:
            fp32: Observation | None = self.observe(mut, self.build(mut, BASELINE), target, sequence)
        except Exception:
            fp32 = None
        trials: list[fn.Trial] = []
        self._repairing = True
        try:
            for label, nodes in fn.crash_candidates(built.path, failure, kept):
                self.progress(f"{mut.name} {built.name}: rebuilding with {label} in float")
                size = 0
                try:
                    rebuilt = self.build(mut, built.name, {**knobs, "float_nodes": nodes})
                    size = rebuilt.size_bytes
                    obs = self.observe(mut, rebuilt, target, sequence)
                except fn.NonFiniteOutputs as err:
                    trial = fn.Trial(label, nodes, nonfinite_samples=max(f.samples for f in err.found), size_bytes=size)
                except Exception as err:
                    trial = fn.Trial(label, nodes, error=str(err).splitlines()[0] if str(err) else type(err).__name__)
                else:
                    acc = obs.accuracy
                    base = fp32.accuracy if fp32 is not None else None
                    trial = fn.Trial(label, nodes, metric_name=acc.metric if acc else None,
                                     metric=acc.value if acc else None, fp32_metric=base.value if base else None,
                                     size_bytes=size)
                trials.append(trial)
                if trial.good(fn.DEFAULT_MAX_DROP):
                    break
        finally:
            self._repairing = False
        return trials

    def measure(self, mut: ModelUnderTest, built: BuiltVariant, target: Target) -> Measurement:
        """``built`` on ``target`` compared with fp32 measured on the same target."""
        base_built = built if built.name == BASELINE else self.build(mut, BASELINE)
        fidelity, sequence = self.fidelity(mut, base_built)
        if built.key == base_built.key:
            obs = self.observe(mut, built, target, sequence)
            return Measurement(obs, obs, model_path=built.path, fidelity=fidelity)
        obs = self.observe(mut, built, target, sequence)
        try:
            baseline = self.observe(mut, base_built, target, sequence)
        except ModelIncompatible:
            # fp32 cannot run here (an Edge TPU takes integer models only): compare with fp32
            # on the host CPU, and say so in the figures (baseline target "cpu").
            baseline = self.observe(mut, base_built, self.target("cpu", HOST), sequence)
        check_collapse(obs, baseline, output_classes(built))
        return Measurement(obs, baseline, model_path=built.path, fidelity=fidelity)

    # -- conversion fidelity -------------------------------------------------------------
    def fidelity(self, mut: ModelUnderTest, fp32: BuiltVariant) -> tuple[Fidelity | None, bool]:
        """The fp32 ``.tflite`` compared with ``mut``'s source model (once per model per
        session, kept in the variant cache) and whether the model is evaluated as a sequence.

        ``None`` for a ``.tflite`` source, a model without eval data, ``fidelity=False``, or
        a source model that cannot be run here (said through ``progress``). Raises
        :class:`~pytest_edgeopt.fidelity.FidelityError` (a TargetError: every test of the
        model fails) beyond the tolerance, ModelError for a bad ``stateful``/``fidelity`` knob.
        """
        memo_key = (mut.name, fp32.key)
        done = self._fidelity.get(memo_key)
        if isinstance(done, BaseException):
            raise done
        if done is None:
            try:
                done = self._check_fidelity(mut, fp32)
            except (FidelityError, ModelError) as exc:
                self._fidelity[memo_key] = exc
                raise
            self._fidelity[memo_key] = done
        return done

    def _check_fidelity(self, mut: ModelUnderTest, fp32: BuiltVariant) -> tuple[Fidelity | None, bool]:
        options = resolve_options(mut)
        stateful = options.get("stateful")
        if stateful not in (None, True, False):
            raise ModelError(f"{mut.name}: the stateful option must be True, False or None (decide from the "
                             f"model), got {stateful!r}")
        try:
            tolerance = Tolerance.from_option(options.get("fidelity"))
        except ValueError as exc:
            raise ModelError(f"{mut.name}: {exc}") from None
        xy = mut.eval_arrays
        if xy is None:  # nothing is predicted: neither a check nor a sequence to evaluate
            return None, False
        if mut.source.kind == "tflite" or not tolerance.enabled:
            return None, bool(stateful) if stateful is not None else has_state_ops(fp32.path)
        x = check_eval_shape(mut, fp32, xy[0])
        material = {"fidelity": 1, "fp32": fp32.key, "eval": fingerprint_arrays(x, xy[1]), "metric": mut.metric,
                    "stateful": stateful, "max_diff_rel": tolerance.max_diff_rel, "versions": self.builder.versions}
        key = key_of(material)
        label = activity.set(f"{mut.name} fidelity")
        try:
            entry = self.builder.cache.get_or_build(
                key, lambda: self._compare_source(mut, fp32, x, xy[1], stateful, tolerance, material), PAYLOAD)
        except _SourceNotRun as exc:
            self.progress(f"{mut.name}: the fp32 conversion is not checked against the source model ({exc})")
            return None, bool(stateful) if stateful is not None else has_state_ops(fp32.path)
        finally:
            activity.reset(label)
        fidelity = replace(from_json(entry.path.read_bytes()), from_cache=entry.hit)
        fidelity.check(tolerance)
        return fidelity, fidelity.stateful

    def _compare_source(self, mut: ModelUnderTest, fp32: BuiltVariant, x: Any, y: Any, stateful: bool | None,
                        tolerance: Tolerance, material: Mapping[str, Any]) -> tuple[bytes, Mapping[str, Any]]:
        from pytest_edgeopt.workers.portable import NotPortable

        self.progress(f"checking {mut.name}'s fp32 conversion against the source model")
        run: SourceRun | None = None
        try:
            if self.workers is not None:
                try:
                    portable = self.builder.portable(mut)
                    run = self.workers.call(
                        FidelityRequest(portable.token, portable, fp32.path.resolve(), x, stateful,
                                        tolerance.max_diff_rel),
                        timeout_s=MEASURE_TIMEOUT_S, crashed=MeasureCrashed)
                except NotPortable:  # as the builder does: this model stays in this process
                    self.builder.mark_not_portable(mut)
                    run = None
            if run is None:
                run = run_source(mut.source, x, fp32.path, stateful, tolerance.max_diff_rel,
                                 self.builder._memo, mut.fingerprint)
        except Exception as exc:  # the source cannot run here (or crashed): the check is skipped, not the tests
            raise _SourceNotRun(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        diff, span = output_difference(run.outputs, run.tflite_outputs)
        op, layer = run.divergence or (None, None)
        fidelity = Fidelity(
            metric=mut.metric_name, source_metric=score(mut.metric, run.outputs, y),
            tflite_metric=score(mut.metric, run.tflite_outputs, y), max_abs_diff=diff, output_range=span,
            samples=n_samples(x), source_kind=mut.source.kind, stateful=run.stateful,
            first_divergent_op=op, first_divergent_layer=layer)
        return (to_json(fidelity),
                {"kind": "fidelity", "model": mut.name, "material": dict(material)})

    def close(self) -> None:
        """Close the targets and stop the worker process."""
        for target in self._targets.values():
            try:
                target.close()
            except Exception:  # closing must not hide the run's results
                pass
        self._targets.clear()
        if self.workers is not None:
            self.workers.close()


class _SourceNotRun(Exception):
    """The source model could not be run for the fidelity check (the check is skipped)."""
