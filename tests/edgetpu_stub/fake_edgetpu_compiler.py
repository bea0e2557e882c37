"""A stand-in for Coral's ``edgetpu_compiler`` (which cannot be installed here).

``install(bin_dir)`` writes this file as an executable ``edgetpu_compiler`` whose
shebang is the running Python. The stand-in accepts the real flags, prints the real
output format, writes ``<stem>_edgetpu.tflite`` (the input plus a marker: still a valid
.tflite that runs unchanged) and ``<stem>_edgetpu.log`` to ``--out_dir``. Which ops
"map" comes from ``pytest_edgeopt.targets.edgetpu.compat.analyze``; a model where nothing maps
gets the real compiler's "Model not quantized" failure.

Environment:
  FAKE_EDGETPU_CALLS    append each invocation's argv as one JSON line to this file
  FAKE_EDGETPU_VERSION  version to report (default 16.0.384591198)
  FAKE_EDGETPU_FAIL     "internal": fail with "Internal compiler error. Aborting!"
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

MARKER = b"\nEDGETPU-STUB-COMPILED\n"
DEFAULT_VERSION = "16.0.384591198"


def install(bin_dir: Path, name: str = "edgetpu_compiler") -> Path:
    """Write the stand-in as an executable ``bin_dir/name`` and return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / name
    target.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text())
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def _size(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.2f}B"


def main(argv: list[str]) -> int:
    calls = os.environ.get("FAKE_EDGETPU_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(json.dumps(argv) + "\n")
    version = os.environ.get("FAKE_EDGETPU_VERSION", DEFAULT_VERSION)
    banner = f"Edge TPU Compiler version {version}"
    if argv and argv[0] in ("-v", "--version"):
        print(banner)
        return 0
    out_dir, show, models = Path.cwd(), False, []
    takes_value = {"-o", "--out_dir", "-m", "--min_runtime_version", "-n", "--num_segments",
                   "-t", "--timeout_sec", "-k", "--delegate_search_step", "-i", "--intermediate_tensors"}
    it = iter(argv)
    for arg in it:
        if arg in ("-s", "--show_operations"):
            show = True
        elif arg in ("-a", "--enable_multiple_subgraphs", "-d", "--search_delegate"):
            pass
        elif arg in takes_value:
            value = next(it)
            if arg in ("-o", "--out_dir"):
                out_dir = Path(value)
        elif arg.startswith("--out_dir="):
            out_dir = Path(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            print(f"ERROR: unknown flag {arg}", file=sys.stderr)
            return 2
        else:
            models.append(Path(arg))
    print(banner)
    print("Started a compilation timeout timer of 180 seconds.")
    if os.environ.get("FAKE_EDGETPU_FAIL") == "internal":
        print("Internal compiler error. Aborting!")
        print("Compilation child process completed within timeout period.")
        print("Compilation failed! ")
        return 1
    from pytest_edgeopt.targets.edgetpu.compat import analyze

    for model in models:
        data = model.read_bytes()
        report = analyze(data)
        if not report.compilable:
            print("Model not quantized")
            print("Compilation child process completed within timeout period.")
            print("Compilation failed! ")
            return 1
        out = out_dir / f"{model.stem}_edgetpu.tflite"
        log = out_dir / f"{model.stem}_edgetpu.log"
        out.write_bytes(data + MARKER)
        rows = Counter((o.op, o.status) for o in report.ops)
        table = ["Operator                       Count      Status", ""]
        table += [f"{op:<30} {count:<10} {status}" for (op, status), count in rows.items()]
        log.write_text(f"{banner}\nInput: {model}\nOutput: {out}\n\n" + "\n".join(table) + "\n")
        print()
        print("Model compiled successfully in 12 ms.")
        print()
        print(f"Input model: {model}")
        print(f"Input size: {_size(len(data))}")
        print(f"Output model: {out}")
        print(f"Output size: {_size(len(data) + len(MARKER))}")
        print(f"On-chip memory used for caching model parameters: {_size(len(data) // 2)}")
        print("On-chip memory remaining for caching model parameters: 7.62MiB")
        offchip = int(os.environ.get("FAKE_EDGETPU_OFFCHIP_BYTES", "0") or 0)  # a model too big for the cache
        print(f"Off-chip memory used for streaming uncached model parameters: {_size(offchip)}")
        print("Number of Edge TPU subgraphs: 1")
        print(f"Total number of operations: {report.total_ops}")
        print(f"Operation log: {log}")
        print()
        if not report.fully_mapped:
            print(
                "Model successfully compiled but not all operations are supported by the Edge TPU. A percentage "
                "of the model will instead run on the CPU, which is slower. If possible, consider updating your "
                "model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs."
            )
            print(f"Number of operations that will run on Edge TPU: {report.edgetpu_ops}")
            print(f"Number of operations that will run on CPU: {report.cpu_ops}")
            print()
        if show:
            print("\n".join(table))
        else:
            print("See the operation log file for individual operation details.")
    print("Compilation child process completed within timeout period.")
    print("Compilation succeeded! ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
