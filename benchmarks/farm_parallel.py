"""Farm parallelism: N phones with ``-n N`` (pytest-xdist) against one phone with ``-n 1``.

    python benchmarks/farm_parallel.py [--devices 2,4] [--reps 2] [--delay-us 5000]

Emulated phones (devices/emulated_device.py) behind two real adb servers (as if on two
hosts, half the phones each), one inventory. Each run measures the same variants (fp32 and
int8, latency only, on android_cpu) on every phone of its inventory: run A has N phones and
``-n N``, run B one phone and ``-n 1``, alternately. A does N times B's work, so with perfect
device parallelism the wall time ratio A/B is 1.0; the **parallel efficiency** is B/A.

The phones run on this host's two cores: each benchmark_model stand-in run is a Python
process loading LiteRT (about 0.6 s of CPU), and the worker processes import the plugin and
the model. So that the benchmark measures the harness's parallelism and not the host CPU,
every inference sleeps ``--delay-us`` (the stand-in's ``standin_delay_us``: a phone-like
per-inference time that sleeps rather than burns CPU), and each measurement runs for several
seconds of such inferences. What is left of the CPU-bound share still bounds the efficiency
on two cores; the figures printed next to the ratio say how much (``cores busy``).

Also printed: the mean number of phones measuring at once, from the device leases' hold
times in the results (N when every phone is always busy); the measuring span (first lease
to last release) against the wall time, whose difference is the start-up of pytest and its
workers (CPU-bound: N workers start on two cores); and whether any phone was ever measured
by two processes at once (never, by construction: the lease).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from sidebyside import Ratio, alternate, cores_available, header, python_env, run_child, say

CONFTEST = """
import pytest
from fixtures.digits import representative_batches
from pytest_edgeopt import ModelUnderTest

@pytest.fixture(scope="session")
def edgeopt_model():
    return ModelUnderTest(name="digits-cnn", model={model!r}, representative_data=representative_batches(50))
"""

TEST = """
import pytest

@pytest.mark.edgeopt_variants("fp32", "int8")
@pytest.mark.android_cpu
def test_phone(measurement):
    pass
"""


def inventory(path: Path, phones: list, standin: Path) -> Path:
    """An inventory naming ``phones`` (``(device, adb server)`` pairs) by serial."""
    lines = ["[android]", f'benchmark_model = "{standin}"', ""]
    for i, (phone, server) in enumerate(phones):
        lines += [f"[android.phone{i}]", f'serial = "{phone.address}"', f'adb = "{server.address}"', ""]
    path.write_text("\n".join(lines))
    return path


def busy_phones(records: list[dict]) -> tuple[float, float, bool]:
    """Mean number of phones holding a lease over the run's measuring span (first lease to
    last release), that span in seconds, and whether two measurements of one phone ever
    overlapped."""
    spans: dict[str, set] = {}
    for r in records:
        for obs in (r["measurement"], r["measurement"]["baseline"]):
            lease = obs["extras"]["lease"]
            spans.setdefault(r["device"], set()).add((lease["since"], lease["until"]))
    overlap = any(e > s2 for w in spans.values() for (_, e), (s2, _) in zip(sorted(w), sorted(w)[1:]))
    flat = [w for ws in spans.values() for w in ws]
    span = max(e for _, e in flat) - min(s for s, _ in flat)
    return sum(e - s for s, e in flat) / span, span, overlap


def run_farm(project: Path, farm: Path, workers: int, tag: str, expect: int) -> dict:
    out = project / f"{tag}.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = run_child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                       f"--edgeopt-farm={farm}", "-n", str(workers), f"--edgeopt-json={out}"],
                      cwd=project, env=python_env(), check=False)
    records = json.loads(out.read_text())["measurements"] if out.exists() else []
    measured = [r for r in records if r["outcome"] == "passed" and r["measurement"]]
    if child.returncode != 0 or len(measured) != expect:
        raise SystemExit(f"{tag}: exit {child.returncode}, {len(measured)}/{expect} measured:\n{child.stdout[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The phones' shell commands (benchmark_model stand-ins) are this process's children.
    phone_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) - child.cpu_s
    concurrency, span, overlap = busy_phones(measured)
    return {"wall_s": child.wall_s, "cpu_s": child.cpu_s + phone_cpu, "concurrency": concurrency,
            "span_s": span, "overlap": overlap}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="2,4", help="phone counts N to compare with one phone (default 2,4)")
    ap.add_argument("--reps", type=int, default=2, help="runs per side (default 2)")
    ap.add_argument("--delay-us", type=int, default=5000, help="sleep per inference on the phones (default 5000)")
    ap.add_argument("--min-time", type=float, default=4.0,
                    help="edgeopt_min_time: seconds of timed inferences per measurement (default 4)")
    args = ap.parse_args()
    counts = [int(n) for n in args.devices.split(",")]
    header(f"farm parallelism: N phones with -n N vs one phone with -n 1 (N = {args.devices}), "
           f"{args.delay_us} us sleep per inference")

    from devices.adb_server import AdbServer
    from devices.benchmark_model_standin import write_standin
    from devices.emulated_device import EmulatedDevice
    from fixtures.digits import digits_model_path

    with tempfile.TemporaryDirectory(prefix="edgeopt-farm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        servers = [AdbServer().start(), AdbServer().start()]
        phones = []
        try:
            for i in range(max(counts)):
                phone = EmulatedDevice(tmp / f"phone{i}", model=f"Emu {i}")
                phone.faults.standin_delay_us = args.delay_us
                phone.start()
                server = servers[i % 2]
                server.connect(phone.address, timeout=20)
                phones.append((phone, server))
            standin = write_standin(tmp / "benchmark_model")
            project = tmp / "project"
            project.mkdir()
            (project / "conftest.py").write_text(CONFTEST.format(model=str(digits_model_path())))
            (project / "test_farm.py").write_text(TEST)
            (project / "pytest.ini").write_text(
                f"[pytest]\nedgeopt_cache_dir = {tmp / 'cache'}\nedgeopt_lease_dir = {tmp / 'leases'}\n"
                f"edgeopt_min_time = {args.min_time}\nedgeopt_min_samples = 20\nedgeopt_android_repeats = 2\n")
            one = inventory(tmp / "one.toml", phones[:1], standin)
            say("warming the variant cache (builds fp32 and int8 once)")
            run_farm(project, one, 1, "warm", 2)
            results = []
            for n in counts:
                many = inventory(tmp / f"farm{n}.toml", phones[:n], standin)
                runs: dict[str, list[dict]] = {"a": [], "b": []}
                capacity: list[float] = []

                def a(n: int = n, many: Path = many) -> float:
                    capacity.append(cores_available())
                    runs["a"].append(run_farm(project, many, n, f"n{n}", 2 * n))
                    return runs["a"][-1]["wall_s"]

                def b() -> float:
                    capacity.append(cores_available())
                    runs["b"].append(run_farm(project, one, 1, "one", 2))
                    return runs["b"][-1]["wall_s"]

                wall_a, wall_b = alternate(a, b, args.reps, label=f"{n} phones -n {n} / 1 phone -n 1 wall")
                results.append((n, Ratio(f"wall time, {n} phones / 1 phone", tuple(wall_a), tuple(wall_b)), runs,
                                capacity))
        finally:
            for phone, _server in phones:
                phone.stop()
            for server in servers:
                server.stop()

    for n, ratio, runs, capacity in results:
        print(ratio.line("-> 1.0 (N times the work in the same time)", None))
        print(f"{'parallel efficiency (B/A)':<34} {1 / ratio.median:.2f}  ({n} phones do {n}x the work of one)")
        print(f"{'phones measuring at once (mean)':<34} {statistics.median(r['concurrency'] for r in runs['a']):.2f} "
              f"of {n} (one phone: {statistics.median(r['concurrency'] for r in runs['b']):.2f})")
        busy_a = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs["a"])
        busy_b = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs["b"])
        print(f"{'cores busy on average':<34} {n} phones {busy_a:.2f}, one phone {busy_b:.2f} "
              f"(of 2: pytest, its workers and the phones' commands; free for us: median "
              f"{statistics.median(capacity):.2f}, the machine is shared)")
        span_a = statistics.median(r["span_s"] for r in runs["a"])
        span_b = statistics.median(r["span_s"] for r in runs["b"])
        print(f"{'measuring span / wall':<34} {n} phones {span_a:.1f} s of {statistics.median(ratio.a):.1f} s, "
              f"one phone {span_b:.1f} s of {statistics.median(ratio.b):.1f} s (the rest: start-up, collection)")
        print(f"{'efficiency of the measuring span':<34} {span_b / span_a:.2f}  (one phone's span / {n} phones' span: "
              "the devices' parallelism without the workers' start-up)")
        print(f"{'a phone measured twice at once':<34} {any(r['overlap'] for r in runs['a'] + runs['b'])}")


if __name__ == "__main__":
    main()
