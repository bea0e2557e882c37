"""Plugin start-up: what installing pytest-edgeopt costs every pytest run of a project that
does not use it.

    python benchmarks/startup.py [--reps 40]

A small project (5 test modules, 55 tests, no edgeopt fixtures) is made in a temporary
directory; ``python -m pytest --co -q`` is timed there with the plugin loaded (A) and with
every edgeopt plugin disabled (B: the core and the three built-in target plugins), alternately. Target: A/B <= 1.05, and tensorflow never imported.

Wall and CPU times on these shared machines vary by +-15% from run to run, more than the
5% to be judged. So the script also counts the instructions each side executes under
valgrind's callgrind (when valgrind is installed: ``apt-get install valgrind``): a count that
repeats to 0.2% whatever else the machine does, and whose ratio is the plugin's cost.

Also printed: which heavy modules the plugin's load pulls in (checked in a child that runs
``pytest.main(["--co", "-q"])`` and then lists ``sys.modules``), and the plugin's own import
time from ``-X importtime``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from sidebyside import Ratio, alternate, header, run_child, say

TARGET = 1.05
#: pytest arguments that turn off every plugin this package installs (its pytest11 entry points).
WITHOUT = ("-p", "no:edgeopt", "-p", "no:edgeopt-cpu", "-p", "no:edgeopt-android", "-p", "no:edgeopt-edgetpu")
HEAVY = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "litert_quantizer", "ai_edge_litert",
         "numpy", "pandas", "matplotlib", "filelock", "adbutils")

TEST_MODULE = '''import pytest


@pytest.mark.parametrize("n", range(10))
def test_param(n):
    assert n >= 0


def test_plain():
    assert True
'''

MODULES_PROBE = '''import json, sys, pytest
code = pytest.main(["--co", "-q", "-p", "no:cacheprovider"] + sys.argv[1:])
print("MODULES=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r and "." not in m)))
''' % (HEAVY,)


def make_project(root: Path) -> None:
    for i in range(5):
        (root / f"test_mod{i}.py").write_text(TEST_MODULE)
    (root / "pytest.ini").write_text("[pytest]\n")


def loaded_modules(project: Path, extra: list[str], env: dict[str, str]) -> list[str]:
    child = run_child([sys.executable, "-c", MODULES_PROBE, *extra], cwd=project, env=env)
    line = next(ln for ln in child.stdout.splitlines() if ln.startswith("MODULES="))
    return json.loads(line.removeprefix("MODULES="))


def plugin_import_ms(project: Path, env: dict[str, str]) -> dict[str, float]:
    """Import times (ms, one run): the plugin's own modules (their self times summed: pytest
    loads ``plugin.py`` through its assertion-rewriting hook, which ``-X importtime`` does
    not list) and the heavy third-party modules, when they are imported at all."""
    child = run_child([sys.executable, "-X", "importtime", "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"],
                      cwd=project, env=env)
    out: dict[str, float] = {}
    for line in child.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        if not own.strip().isdigit():  # the column header
            continue
        name = name.strip()
        if name.startswith("pytest_edgeopt"):
            out["pytest_edgeopt.* modules"] = out.get("pytest_edgeopt.* modules", 0.0) + int(own) / 1000
        elif name in HEAVY:
            out[name] = int(cumulative) / 1000
    return out


def instructions(cmd: list[str], cwd: Path, env: dict[str, str]) -> int | None:
    """Instructions ``cmd`` executes (callgrind's ``Collected``), or None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    child = run_child([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd], cwd=cwd, env=env)
    found = re.search(r"Collected : (\d+)", child.stderr)
    return int(found.group(1)) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40, help="timed runs per side (default 40)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run the children with PYTHONDONTWRITEBYTECODE=1 (every run compiles the plugin again)")
    args = ap.parse_args()
    header("plugin start-up: pytest --co -q on a 55-test project, plugin loaded vs every edgeopt plugin off"
           + (" (PYTHONDONTWRITEBYTECODE=1)" if args.no_bytecode_cache else " (bytecode caches on)"))
    # As the user runs it: the installed plugin, no extra import path, and bytecode caches
    # written (``pip install`` compiles a package's .pyc files and pytest caches its rewritten
    # plugin modules). These machines set PYTHONDONTWRITEBYTECODE=1, which would recompile
    # the plugin's source on every run; --no-bytecode-cache measures that case instead.
    env: dict[str, str] = {"PYTHONDONTWRITEBYTECODE": "1" if args.no_bytecode_cache else ""}
    with tempfile.TemporaryDirectory(prefix="edgeopt-startup-") as tmp:
        project = Path(tmp)
        make_project(project)
        base = [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider"]

        cpu: dict[str, list[float]] = {"a": [], "b": []}

        def with_plugin() -> float:
            child = run_child(base, cwd=project, env=env)
            cpu["a"].append(child.cpu_s)
            return child.wall_s

        def without_plugin() -> float:
            child = run_child([*base, *WITHOUT], cwd=project, env=env)
            cpu["b"].append(child.cpu_s)
            return child.wall_s

        for _ in range(3):  # page cache, .pyc files
            with_plugin(), without_plugin()
        say(f"timing {args.reps} runs per side, alternating")
        cpu["a"].clear(), cpu["b"].clear()
        a, b = alternate(with_plugin, without_plugin, args.reps)
        ratio = Ratio("pytest --co -q wall time", tuple(a), tuple(b))
        cpu_ratio = Ratio("pytest --co -q CPU time (user+sys)", tuple(cpu["a"]), tuple(cpu["b"]))
        say("counting instructions under callgrind (about 30 s)")
        counts = [(instructions(base, project, env), instructions([*base, *WITHOUT], project, env))
                  for _ in range(2)]
        mods_with = loaded_modules(project, [], env)
        mods_without = loaded_modules(project, list(WITHOUT), env)
        imports = plugin_import_ms(project, env)
    added = [m for m in mods_with if m not in mods_without]
    tf_free = not any(m.startswith("tensorflow") or m == "tf_keras" for m in mods_with)
    print(ratio.line(f"<= {TARGET}", ratio.median <= TARGET))
    print(cpu_ratio.line("(for information: less sensitive to other load)", None))
    if all(a is not None and b is not None for a, b in counts):
        ratios = [a / b for a, b in counts]
        worst = max(ratios)
        print(f"{'instructions (callgrind)':<34} ratio  {worst:.4f}  (runs: "
              + ", ".join(f"{a:,} / {b:,}" for a, b in counts) + f")  target <= {TARGET}  "
              + ("PASS" if worst <= TARGET else "MISS"))
    else:
        print(f"{'instructions (callgrind)':<34} not counted: valgrind is not installed")
    print(f"{'tensorflow imported at start-up':<34} {'no' if tf_free else 'YES'}  target no  {'PASS' if tf_free else 'MISS'}")
    print(f"{'heavy modules the plugin adds':<34} {', '.join(added) or 'none'}")
    print(f"{'import time (-X importtime, 1 run)':<34} " + ", ".join(f"{k} {v:.0f} ms" for k, v in imports.items()))
    print(f"{'plugin cost per run (median A-B)':<34} "
          f"{(sorted(a)[len(a) // 2] - sorted(b)[len(b) // 2]) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
