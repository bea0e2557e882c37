"""Builds variants through the cache: one call per (model, variant, options).

Decides availability from the registry (a skip reason), keys the build by content
(:func:`pytest_edgeopt.variants.cache.key_of`), builds under the cache's cross-process lock, and
remembers within the process what was built or failed, so a variant is built at most
once per session. Tensorflow is imported only by the builders themselves.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pytest_edgeopt.versions import tool_versions
from pytest_edgeopt.variants.cache import VariantCache, key_of
from pytest_edgeopt.model import ModelError, ModelUnderTest
from pytest_edgeopt.variants.registry import (
    BASELINE,
    VARIANTS,
    BuildContext,
    VariantBuildError,
    VariantUnavailable,
    check_options,
    recipe,
    resolve_options,
    unavailable_reason,
)


def gzip_size(data: bytes) -> int:
    """Size in bytes of ``data`` compressed with gzip level 9 (what a download costs)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass(frozen=True, slots=True)
class BuiltVariant:
    """A built variant: ``path`` of the ``.tflite`` (in the cache), sizes in bytes
    (``compressed_size_bytes`` is gzip level 9), the full ``recipe``, the time its build
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
    """Builds (or fetches) variants of models; one per session (per xdist worker)."""

    def __init__(self, cache: VariantCache, progress: Callable[[str], None] = lambda msg: None) -> None:
        self.cache = cache
        self.progress = progress
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
        rec = recipe(spec, options)
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
            entry = self.cache.get_or_build(key, lambda: self._run_builder(mut, name, options, material))
        except (VariantUnavailable, VariantBuildError, ModelError) as exc:
            self._done[key] = exc
            raise
        size, compressed = entry.meta.get("size_bytes"), entry.meta.get("compressed_size_bytes")
        if not isinstance(size, int) or not isinstance(compressed, int):  # an entry from an older version
            data = entry.path.read_bytes()
            size, compressed = len(data), gzip_size(data)
        built = BuiltVariant(
            model=mut.name, name=name, path=entry.path, size_bytes=size,
            compressed_size_bytes=compressed, recipe=material["recipe"],
            build_seconds=float(entry.meta.get("build_seconds", 0.0)), from_cache=entry.hit, key=key,
        )
        self._done[key] = built
        if entry.hit:
            self.hits += 1
        else:
            self.built += 1
        return built

    def _run_builder(self, mut: ModelUnderTest, name: str, options: Mapping[str, Any],
                     material: Mapping[str, Any]) -> tuple[bytes, Mapping[str, Any]]:
        spec = VARIANTS[name]
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
                      "compressed_size_bytes": gzip_size(data)}
