"""Builds variants through the cache: one call per (model, variant, options).

Decides availability from the registry (a skip reason), keys the build by content
(:func:`pytest_edgeopt.variants.cache.key_of`), builds under the cache's cross-process lock, and
remembers within the process what was built or failed, so a variant is built at most
once per session. Tensorflow is imported only by the builders themselves: with a
:class:`~pytest_edgeopt.workers.pool.WorkerPool`, a cache miss is built in a worker process
(which writes the entry into the same store), so a native crash fails that variant only.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_edgeopt.model import ModelError, ModelUnderTest
from pytest_edgeopt.variants.cache import Entry, VariantCache, key_of
from pytest_edgeopt.variants.registry import (
    BASELINE,
    VARIANTS,
    BuildContext,
    VariantBuildError,
    VariantSpec,
    VariantUnavailable,
    check_options,
    recipe,
    resolve_options,
    unavailable_reason,
)
from pytest_edgeopt.versions import tool_versions
from pytest_edgeopt.workers.stage import stage

if TYPE_CHECKING:  # pragma: no cover
    from pytest_edgeopt.workers.pool import WorkerPool
    from pytest_edgeopt.workers.portable import PortableModel
    from pytest_edgeopt.workers.serve import WorkerState


def gzip_size(data: bytes) -> int:
    """Size in bytes of ``data`` compressed with gzip level 9 (what a download costs)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass(frozen=True, slots=True)
class BuiltVariant:
    """A built variant: ``path`` of the ``.tflite`` (in the cache), sizes in bytes
    (``compressed_size_bytes`` is gzip level 9), the full ``recipe`` (with the notes its
    builder recorded, e.g. ``conversion: concrete_function_batch1``), the time its build
    took in seconds (when it was built, in this or an earlier run), and ``from_cache``."""

    model: str
    name: str
    path: Path
    size_bytes: int
    compressed_size_bytes: int
    recipe: Mapping[str, Any]
    build_seconds: float
    from_cache: bool
    key: str

    def __repr__(self) -> str:
        return f"BuiltVariant({self.model} {self.name}: {self.size_bytes:,} B, {'cached' if self.from_cache else 'built'})"

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


class Builder:
    """Builds (or fetches) variants of models; one per session (per xdist worker).

    ``workers``: build cache misses in this pool's worker process (``None``: in this
    process). A model that cannot be sent to a worker (an in-memory model or a knob that
    does not pickle) is built in this process, said once through ``progress``.
    """

    def __init__(self, cache: VariantCache, progress: Callable[[str], None] = lambda msg: None,
                 workers: WorkerPool | None = None) -> None:
        self.cache = cache
        self.progress = progress
        self.workers = workers
        self._pickled: dict[int, tuple[ModelUnderTest, bytes | None]] = {}
        self._not_portable: set[int] = set()
        self._done: dict[str, BuiltVariant | BaseException] = {}
        self._memo: dict[Any, Any] = {}
        self._versions: dict[str, str | None] | None = None
        self._data_fps: dict[tuple[int, str], tuple[ModelUnderTest, str | None]] = {}
        #: Wall seconds spent in build() (lookups included), and variants built vs found.
        self.seconds = 0.0
        self.built = 0
        self.hits = 0
        self._depth = 0

    @property
    def versions(self) -> dict[str, str | None]:
        """The tool versions that go into every cache key, read on first use (not at start-up)."""
        if self._versions is None:
            self._versions = tool_versions()
        return self._versions

    def material(self, mut: ModelUnderTest, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Everything that determines the variant's bytes (hashed into its cache key)."""
        spec = VARIANTS[name]
        rec = recipe(spec, options, mut.source.kind)
        data = {need: self._data_fingerprint(mut, need) for need in spec.needs}
        return {"model": mut.fingerprint, "kind": mut.source.kind, "recipe": rec, "data": data, "versions": self.versions}

    def _data_fingerprint(self, mut: ModelUnderTest, need: str) -> str | None:
        # Hashing the training data is the costliest part of a cache lookup for a large data
        # set (~0.4 s for 200 MB), and every variant that trains needs it: once per model.
        key = (id(mut), need)
        hit = self._data_fps.get(key)
        if hit is not None and hit[0] is mut:
            return hit[1]
        fp = mut.data_fingerprint(need)
        self._data_fps[key] = (mut, fp)
        return fp

    def build(self, mut: ModelUnderTest, name: str, test_options: Mapping[str, Any] | None = None) -> BuiltVariant:
        """The variant ``name`` of ``mut``. Raises VariantUnavailable (skip) with the reason,
        VariantBuildError with the cause, ModelError for unusable input."""
        start = time.perf_counter()
        self._depth += 1
        try:
            return self._build(mut, name, test_options)
        finally:
            self._depth -= 1
            if self._depth == 0:  # the fp32 a builder asks for is inside its caller's time
                self.seconds += time.perf_counter() - start

    def _build(self, mut: ModelUnderTest, name: str, test_options: Mapping[str, Any] | None) -> BuiltVariant:
        if name not in VARIANTS:
            raise ModelError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        spec = VARIANTS[name]
        check_options(test_options or {}, "edgeopt_options")
        check_options(mut.options or {}, f"ModelUnderTest({mut.name!r}).options")
        options = resolve_options(mut, test_options)
        reason = unavailable_reason(spec, mut)
        if reason:
            raise VariantUnavailable(reason)
        material = self.material(mut, name, options)
        key = key_of(material)
        done = self._done.get(key)
        if isinstance(done, BaseException):
            raise done
        if done is not None:
            return done
        try:
            entry = self._obtain(mut, spec, options, material, key)
        except (VariantUnavailable, VariantBuildError, ModelError) as exc:
            self._done[key] = exc
            raise
        size, compressed = entry.meta.get("size_bytes"), entry.meta.get("compressed_size_bytes")
        if not isinstance(size, int) or not isinstance(compressed, int):  # an entry from an older version
            data = entry.path.read_bytes()
            size, compressed = len(data), gzip_size(data)
        notes = entry.meta.get("notes")  # what the builder chose (a batch-1 conversion, dense layers)
        built = BuiltVariant(
            model=mut.name, name=name, path=entry.path, size_bytes=size,
            compressed_size_bytes=compressed,
            recipe={**material["recipe"], **notes} if isinstance(notes, dict) and notes else material["recipe"],
            build_seconds=float(entry.meta.get("build_seconds", 0.0)), from_cache=entry.hit, key=key,
        )
        self._done[key] = built
        if entry.hit:
            self.hits += 1
        else:
            self.built += 1
        return built

    def variants_done(self) -> list[BuiltVariant]:
        """The variants this builder has built or found so far."""
        return [b for b in self._done.values() if isinstance(b, BuiltVariant)]

    def produce(self, mut: ModelUnderTest, spec: VariantSpec, options: Mapping[str, Any],
                material: Mapping[str, Any], key: str) -> Entry:
        """The cache entry ``key`` of ``spec``, built in this process when absent."""
        return self.cache.get_or_build(key, lambda: self._run_builder(mut, spec, options, material))

    def _obtain(self, mut: ModelUnderTest, spec: VariantSpec, options: Mapping[str, Any],
                material: Mapping[str, Any], key: str) -> Entry:
        if self.workers is None or id(mut) in self._not_portable:
            return self.produce(mut, spec, options, material, key)
        if not self.cache.rebuild:  # a warm run starts no worker
            entry = self.cache.lookup(key)
            if entry is not None:
                return entry
        from pytest_edgeopt.workers.pool import BUILD_TIMEOUT_S, BuildCrashed, activity
        from pytest_edgeopt.workers.portable import NotPortable

        try:
            portable = self.portable(mut, spec.needs)
            request = BuildRequest(
                token=portable.token, model=portable, spec=spec, options=dict(options), material=material,
                key=key, cache_root=self.cache.root.resolve(), rebuild=self.cache.rebuild,
                created=self.cache._created, versions=self.versions, eval_data=_bridge_eval_data(mut, spec))
            label = activity.get() or f"{mut.name} {spec.name}"
            reply: BuildReply = self.workers.call(request, timeout_s=BUILD_TIMEOUT_S, crashed=BuildCrashed, label=label)
        except NotPortable as exc:
            self.mark_not_portable(mut)
            self.progress(f"building {mut.name} in this process: the model cannot be sent to a worker ({exc})")
            return self.produce(mut, spec, options, material, key)
        for nested in reply.nested:  # the fp32 a quantized build started from, built there
            if nested.key not in self._done:
                self._done[nested.key] = replace(nested, model=mut.name)
                if nested.from_cache:
                    self.hits += 1
                else:
                    self.built += 1
                    self._publish(nested.key)
        self.cache.publish(reply.entry)  # the worker wrote the local cache; the shared one is ours
        return reply.entry

    def _publish(self, key: str) -> None:
        if self.cache.remote is not None:
            entry = self.cache.local(key)
            if entry is not None:
                self.cache.publish(replace(entry, hit=False))

    def mark_not_portable(self, mut: ModelUnderTest) -> None:
        """``mut`` cannot be sent to a worker: its builds (and checks) stay in this process."""
        self._not_portable.add(id(mut))

    def portable(self, mut: ModelUnderTest, needs: tuple[str, ...] = ()) -> PortableModel:
        """``mut`` as a worker receives it, with the data fields ``needs`` (the in-memory
        model pickled once per model). Raises NotPortable (build or check in-process)."""
        from pytest_edgeopt.workers.portable import NotPortable, PortableModel, pickle_model

        if id(mut) in self._not_portable:
            raise NotPortable(f"{mut.name} cannot be sent to a worker")
        hit = self._pickled.get(id(mut))
        if hit is None or hit[0] is not mut:
            src = mut.source
            hit = self._pickled[id(mut)] = (mut, None if src.path is not None else pickle_model(src.obj))
        return PortableModel.of(mut, needs, hit[1])

    def _run_builder(self, mut: ModelUnderTest, spec: VariantSpec, options: Mapping[str, Any],
                     material: Mapping[str, Any]) -> tuple[bytes, Mapping[str, Any]]:
        name = spec.name
        self.progress(f"building {mut.name} {name} ({spec.summary})")
        workdir = Path(tempfile.mkdtemp(prefix=f"edgeopt-{name}-"))
        try:
            ctx = BuildContext(
                mut=mut, spec=spec, options=options, workdir=workdir, progress=self.progress,
                fp32=lambda: self.build(mut, BASELINE).read_bytes(), memo=self._memo, cache=self.cache,
            )
            data = spec.build_function()(ctx)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not isinstance(data, (bytes, bytearray)) or len(data) < 8:
            raise VariantBuildError(f"{name}: the builder returned no model")
        data = bytes(data)
        # gzip -9 takes ~1 s per 15 MB: computed once here and kept in meta.json, so a warm
        # run does not recompress every variant.
        return data, {"material": material, "variant": name, "model": mut.name,
                      "compressed_size_bytes": gzip_size(data), "notes": dict(ctx.notes)}


def _bridge_eval_data(mut: ModelUnderTest, spec: VariantSpec) -> tuple[Any, Any] | None:
    """The eval data a worker needs beside the build's own fields: only a fine-tuning build of
    a Keras 3 model or Keras SavedModel, which checks its tf_keras twin on the eval inputs."""
    src = mut.source
    if not spec.trains or not (src.kind == "keras3" or (src.kind == "saved_model" and src.trainable)):
        return None
    return mut.eval_arrays


# -- the request a worker process runs (pytest_edgeopt.workers) --------------------------------
@dataclass(frozen=True, slots=True)
class BuildReply:
    """The cache ``entry`` the worker built or found, and every variant it got on the way
    (``nested``: the fp32 a quantized build starts from), for the parent's bookkeeping."""

    entry: Entry
    nested: tuple[BuiltVariant, ...]


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """Build the variant ``spec`` of ``model`` into the cache at ``cache_root`` under ``key``.

    The worker builds with its own :class:`~pytest_edgeopt.variants.builder.Builder` over
    the same store (its cross-process lock holds), started with the parent's tool
    ``versions`` and cache creation time (``created``) so keys and ``--edgeopt-rebuild``
    freshness agree. ``model`` is ``None`` when the worker already holds ``token``."""

    token: str
    model: PortableModel | None
    spec: VariantSpec
    options: Mapping[str, Any]
    material: Mapping[str, Any]
    key: str
    cache_root: Path
    rebuild: bool
    created: float
    versions: Mapping[str, str | None]
    #: The eval ``(x, y)`` a fine-tuning build of a Keras 3 model or Keras SavedModel checks
    #: its tf_keras twin on (:mod:`pytest_edgeopt.variants.keras_bridge`); ``None`` otherwise.
    eval_data: tuple[Any, Any] | None = None

    def for_worker(self, known: set[str]) -> BuildRequest:
        if self.token in known:
            return replace(self, model=None)
        known.add(self.token)
        return self

    def run(self, worker: WorkerState) -> BuildReply:
        stage("convert")
        mut = worker.model(self.token, self.model)
        if self.eval_data is not None and mut.eval_data is None:
            mut.eval_data = self.eval_data
            mut._eval = False  # resolved again from eval_data
        builder = self._builder(worker)
        before = {b.key for b in builder.variants_done()}
        entry = builder.produce(mut, self.spec, self.options, self.material, self.key)
        nested = tuple(b for b in builder.variants_done() if b.key not in before and b.key != self.key)
        return BuildReply(entry, nested)

    def _builder(self, worker: WorkerState) -> Builder:
        """The worker's Builder over this cache, made once per worker (its in-process memo of
        loaded models and fine-tuned intermediates is what reusing a worker buys)."""
        key = ("builder", str(self.cache_root), self.rebuild)
        if key not in worker.memo:
            cache = VariantCache(self.cache_root, rebuild=self.rebuild)
            cache._created = self.created  # the parent's: entries a sibling built this session are fresh
            builder = Builder(cache, worker.progress)
            builder._versions = dict(self.versions)
            worker.memo[key] = builder
        return worker.memo[key]  # type: ignore[no-any-return]
