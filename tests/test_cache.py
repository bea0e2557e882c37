"""The content-addressed variant cache: hits, corruption, rebuild, and cross-process locking."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from pytest_edgeopt.atomic import atomic_write_bytes
from pytest_edgeopt.variants.cache import VariantCache, key_of


def test_key_is_stable_and_content_sensitive() -> None:
    a = key_of({"model": "abc", "recipe": {"variant": "int8", "calibration_samples": 100}})
    b = key_of({"recipe": {"calibration_samples": 100, "variant": "int8"}, "model": "abc"})
    c = key_of({"model": "abc", "recipe": {"variant": "int8", "calibration_samples": 101}})
    assert a == b != c and len(a) == 64


def test_build_once_then_hit(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return b"TFL3-model-bytes", {"variant": "int8"}

    first = cache.get_or_build("k" * 64, build)
    second = cache.get_or_build("k" * 64, build)
    assert calls == [1]
    assert not first.hit and second.hit
    assert second.path.read_bytes() == b"TFL3-model-bytes"
    assert second.meta["variant"] == "int8" and second.meta["build_seconds"] >= 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta", "bad_meta", "no_model"])
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = VariantCache(tmp_path)
    entry = cache.get_or_build("a" * 64, lambda: (b"0123456789" * 100, {}))
    meta = entry.path.with_name("meta.json")
    if damage == "truncate":
        entry.path.write_bytes(entry.path.read_bytes()[:500])
    elif damage == "flip":
        entry.path.write_bytes(b"X" + entry.path.read_bytes()[1:])
    elif damage == "no_meta":
        meta.unlink()
    elif damage == "bad_meta":
        meta.write_text("{not json")
    else:
        entry.path.unlink()
    assert cache.lookup("a" * 64) is None
    again = cache.get_or_build("a" * 64, lambda: (b"rebuilt-bytes", {}))
    assert not again.hit and again.path.read_bytes() == b"rebuilt-bytes"


def test_rebuild_ignores_existing_entries(tmp_path: Path) -> None:
    VariantCache(tmp_path).get_or_build("b" * 64, lambda: (b"old-bytes", {}))
    entry = VariantCache(tmp_path, rebuild=True).get_or_build("b" * 64, lambda: (b"new-bytes", {}))
    assert not entry.hit and entry.path.read_bytes() == b"new-bytes"
    assert VariantCache(tmp_path).lookup("b" * 64).path.read_bytes() == b"new-bytes"


def test_payload_name_picks_the_entry_file(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    entry = cache.get_or_build("e" * 64, lambda: (b"fine-tuned weights", {}), payload="weights.npz")
    assert entry.path.name == "weights.npz" and not entry.path.with_name("model.tflite").exists()
    assert cache.lookup("e" * 64) is None  # not taken for a .tflite
    assert cache.lookup("e" * 64, "weights.npz").path.read_bytes() == b"fine-tuned weights"


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)

    def boom():
        raise RuntimeError("converter failed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("c" * 64, boom)
    assert cache.lookup("c" * 64) is None
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def fail_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new-content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _worker(root: str, counter: str, out: multiprocessing.Queue) -> None:
    import time

    def build():
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough that the other workers wait on the lock
        return b"shared-variant", {}

    entry = VariantCache(Path(root)).get_or_build("d" * 64, build)
    out.put(entry.path.read_bytes())


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    counter = tmp_path / "count.txt"
    q: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), str(counter), q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [q.get(timeout=5) for _ in procs] == [b"shared-variant"] * 3
    assert counter.read_text().count("built") == 1
    meta = json.loads(next((tmp_path / "cache").rglob("meta.json")).read_text())
    assert meta["size_bytes"] == len(b"shared-variant")


class _Loss:
    """Stands in for a Keras loss object: equal configs are equal losses."""

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits, "reduction": "sum_over_batch_size"}


def _named_loss(y_true, y_pred):  # noqa: ANN001
    return 0.0


def test_a_loss_object_keys_by_its_config_not_its_address() -> None:
    """str() of an object embeds its address: keyed by it, a run never found what the last built."""
    from pytest_edgeopt.variants.cache import key_of

    def material(loss: object) -> dict:
        return {"model": "m", "recipe": {"variant": "qat_int8", "loss": loss}}

    assert key_of(material(_Loss())) == key_of(material(_Loss()))
    assert key_of(material(_Loss())) != key_of(material(_Loss(from_logits=True)))
    assert key_of(material(_named_loss)) == key_of(material(_named_loss))
    assert key_of(material(_named_loss)) != key_of(material(_Loss()))
    assert key_of(material(object())) == key_of(material(object()))
