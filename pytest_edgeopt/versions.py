"""The versions of the tools that build and run variants, read from package metadata without
importing them; they go into every cache key and every saved run."""

from __future__ import annotations

import functools
from importlib import metadata

#: Distributions whose versions go into every key (read without importing them).
TOOL_DISTRIBUTIONS = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "litert-quantizer", "ai-edge-litert")


def tool_versions() -> dict[str, str | None]:
    """The installed versions of :data:`TOOL_DISTRIBUTIONS` (``None`` when absent)."""
    return dict(_tool_versions())


@functools.cache
def _tool_versions() -> tuple[tuple[str, str | None], ...]:
    # Each lookup scans the import path's metadata (about 2 ms); once per process is enough.
    out: list[tuple[str, str | None]] = []
    for dist in TOOL_DISTRIBUTIONS:
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, None))
    return tuple(out)
