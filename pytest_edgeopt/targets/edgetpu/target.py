"""The Coral Edge TPU target: discovery, compilation, and timing through ``libedgetpu``.

The runtime is reached the way pycoral reaches it: ``load_delegate("libedgetpu.so.1",
{"device": "usb:0"})`` and a LiteRT interpreter with that delegate. Google's pycoral
(from Coral's own package repository, Python <= 3.9 only; the PyPI project named
``pycoral`` is unrelated) is used when it is importable, never required.

A model goes through :func:`~pytest_edgeopt.targets.edgetpu.compat.analyze` first: one with no
op for the Edge TPU is refused with :class:`EdgeTpuIncompatible` (a
``TargetUnavailable`` carrying the reasons) and never sent to the compiler. Otherwise
it is compiled with ``edgetpu_compiler`` (cached by model hash, compiler version and
flags), unless it is already compiled (holds an ``edgetpu-custom-op``).

Device strings are libedgetpu's: ``usb``, ``usb:N``, ``pci``, ``pci:N`` or ``:N`` (the
N-th Edge TPU of any type). Discovery numbers devices in sysfs/``/dev`` order, which is
the runtime's order on a machine with one device of each type; with several USB
accelerators, pass ``--edgeopt-edgetpu=usb:N`` explicitly.
"""

from __future__ import annotations

import ctypes
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_edgeopt.profile import Placement, Profile
from pytest_edgeopt.targets.base import (
    Device,
    Discovery,
    LatencyResult,
    LatencySettings,
    TargetError,
    TargetUnavailable,
    VariantBroken,
)
from pytest_edgeopt.targets.edgetpu.compat import EdgeTpuIncompatible, EdgeTpuReport, analyze
from pytest_edgeopt.targets.edgetpu.compiler import INSTALL_HINT, CompileCache, CompileLog, find_compiler
from pytest_edgeopt.targets.host_memory import SOURCE, PeakRss
from pytest_edgeopt.tensors import ModelIO, TensorSpec, outputs_to_float, to_model_input
from pytest_edgeopt.timing import time_invokes

__all__ = [
    "DEFAULT_LIBRARY",
    "EdgeTpuIncompatible",
    "EdgeTpuTarget",
    "PreparedModel",
    "USB_IDS",
    "discover_edgetpu",
    "parse_device",
]

DEFAULT_LIBRARY = "libedgetpu.so.1"

#: USB vendor:product of the Coral USB Accelerator before its firmware is loaded
#: (Global Unichip Corp.) and after (Google Inc.); Coral's udev rules list both.
USB_IDS: tuple[tuple[str, str], ...] = (("1a6e", "089a"), ("18d1", "9302"))

RUNTIME_HINT = (
    "install it from Coral's package repository "
    '(echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | '
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list; sudo apt-get update; "
    "sudo apt-get install libedgetpu1-std), or give its path with --edgeopt-edgetpu-library=PATH"
)

NO_DEVICE = "no Edge TPU found (USB 1a6e:089a/18d1:9302 or /dev/apex_*)"

_DEVICE_RE = re.compile(r"^(?:(usb|pci)(?::(\d+))?|:(\d+))$")


def parse_device(spec: str) -> str:
    """Check an Edge TPU device string and return it normalized (whitespace stripped).

    Accepts ``usb``, ``usb:N``, ``pci``, ``pci:N`` and ``:N``; raises ``ValueError``
    naming the accepted forms otherwise.
    """
    s = str(spec).strip()
    if not _DEVICE_RE.match(s):
        raise ValueError(
            f"invalid Edge TPU device {spec!r}: expected usb, usb:N, pci, pci:N or :N "
            "(N = the device's index, e.g. usb:0)"
        )
    return s


def runtime_missing(library: str, error: object = None) -> str:
    """The message for a runtime library that does not load."""
    why = f" ({error})" if error else ""
    return f"Edge TPU runtime {library} not found{why}: {RUNTIME_HINT}"


def runtime_error(library: str) -> str | None:
    """``None`` when ``library`` loads with ``dlopen``, else the loader's error."""
    try:
        ctypes.CDLL(library)
    except OSError as e:
        return str(e)
    return None


def _pycoral_list() -> list[dict[str, str]] | None:
    try:  # Google's pycoral only; the unrelated PyPI "pycoral" has no pycoral.utils.edgetpu
        from pycoral.utils.edgetpu import list_edge_tpus  # type: ignore[import-not-found]
    except Exception:
        return None
    try:
        return [dict(d) for d in list_edge_tpus()]
    except Exception:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def _usb_devices(usb_root: Path) -> list[tuple[Path, str]]:
    found = []
    if usb_root.is_dir():
        for d in sorted(usb_root.iterdir()):
            ids = (_read(d / "idVendor"), _read(d / "idProduct"))
            if ids in USB_IDS:
                found.append((d, ":".join(ids)))
    return found


def discover_edgetpu(
    devices: Sequence[str] = (),
    *,
    library: str = DEFAULT_LIBRARY,
    usb_root: Path = Path("/sys/bus/usb/devices"),
    dev_root: Path = Path("/dev"),
) -> Discovery:
    """The Edge TPUs to run on.

    ``devices`` given by the user are validated (``ValueError`` on a bad string) and used
    as they are: the runtime reports at load time if one is absent. Otherwise pycoral's
    ``list_edge_tpus()`` when importable; else, if ``library`` loads, PCIe devices from
    ``/dev/apex_*`` and USB accelerators from sysfs vendor:product ids (:data:`USB_IDS`).
    ``missing`` says why the list is empty: no runtime, or no device.
    """
    explicit = [parse_device(d) for d in devices]
    if explicit:
        return Discovery(tuple(_device(d, {"source": "user"}) for d in dict.fromkeys(explicit)))
    listed = _pycoral_list()
    if listed is not None:
        counters: dict[str, int] = {}
        found = []
        for d in listed:
            kind = d.get("type", "usb")
            n = counters.get(kind, 0)
            counters[kind] = n + 1
            found.append(_device(f"{kind}:{n}", {"source": "pycoral", "path": d.get("path")}))
        return Discovery(tuple(found), None if found else NO_DEVICE)
    err = runtime_error(library)
    if err is not None:
        return Discovery((), runtime_missing(library, err))
    found = [
        _device(f"pci:{i}", {"source": "dev", "path": str(p)}) for i, p in enumerate(sorted(dev_root.glob("apex_*")))
    ]
    found += [
        _device(f"usb:{i}", {"source": "sysfs", "path": str(p), "usb_id": usb_id})
        for i, (p, usb_id) in enumerate(_usb_devices(usb_root))
    ]
    return Discovery(tuple(found), None if found else NO_DEVICE)


def _device(spec: str, details: dict[str, Any]) -> Device:
    return Device(kind="edgetpu", id=spec, label=spec, details={k: v for k, v in details.items() if v is not None})


# --- loading the delegate -----------------------------------------------------------------


def _quiet_delegate_class() -> type:
    from ai_edge_litert.interpreter import Delegate

    class QuietDelegate(Delegate):  # type: ignore[misc]
        """``Delegate`` whose failed construction leaves nothing for ``__del__``.

        Upstream's ``__del__`` reads ``self._library``, which is unset when the library
        does not load, so CPython prints "Exception ignored in Delegate.__del__" to
        stderr; and when creation returns NULL it would destroy a NULL delegate.
        """

        def __init__(self, library: str, options: dict[str, str] | None = None):
            self._library = None
            try:
                super().__init__(library, options)
            except BaseException:
                self._library = None
                raise

    return QuietDelegate


def _pycoral_make_interpreter() -> Any:
    try:
        from pycoral.utils.edgetpu import make_interpreter
    except Exception:
        return None
    return make_interpreter


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A model ready for the Edge TPU: the file to load (compiled, or the input when it
    was compiled already), the analysis of the input, and the compile log (``None``
    when nothing was compiled)."""

    source: Path
    path: Path
    report: EdgeTpuReport
    compile_log: CompileLog | None
    compiler_version: str | None = None
    from_cache: bool = False


class EdgeTpuTarget:
    """Runs models on one Edge TPU through ``library`` (``libedgetpu.so.1``).

    ``compiler`` is the ``edgetpu_compiler`` to use (``None``: look on PATH); compiled
    models go to ``cache_dir/edgetpu``. ``threads`` is the interpreter's CPU threads for
    the ops that stay on the CPU during ``predict`` (``latency`` uses the settings').
    """

    def __init__(
        self,
        device: Device | str = "usb",
        *,
        name: str = "edgetpu",
        library: str = DEFAULT_LIBRARY,
        compiler: Path | str | None = None,
        cache_dir: Path,
        threads: int = 1,
        compiler_flags: Sequence[str] = (),
        compile_timeout_s: float = 300,
    ) -> None:
        self.name = name
        self.device = device if isinstance(device, Device) else _device(parse_device(device), {"source": "user"})
        self.library = str(library)
        self.compiler = find_compiler(compiler) if compiler is not None else find_compiler()
        self._compiler_arg = compiler
        self.cache_dir = Path(cache_dir)
        self.threads = max(1, int(threads))
        self.compiler_flags = tuple(compiler_flags)
        self.compile_timeout_s = compile_timeout_s
        self._prepared: dict[tuple[str, int, int], PreparedModel] = {}
        self._cache: CompileCache | None = None

    # -- compile ---------------------------------------------------------------------------

    def prepare(self, model: Path) -> PreparedModel:
        """Analyse and (if needed) compile ``model``; memoized per file state.

        Raises :class:`EdgeTpuIncompatible` when no op would run on the Edge TPU,
        :class:`TargetUnavailable` when a compiler is needed but missing, and
        :class:`~pytest_edgeopt.targets.edgetpu.compiler.EdgeTpuCompileError` (a TargetError)
        when the compiler fails.
        """
        model = Path(model)
        st = model.stat()
        memo_key = (str(model.resolve()), st.st_mtime_ns, st.st_size)
        if memo_key in self._prepared:
            return self._prepared[memo_key]
        report = analyze(model)
        if report.precompiled:
            prepared = PreparedModel(model, model, report, None)
        elif not report.compilable:
            raise EdgeTpuIncompatible(report, model.name)
        elif self.compiler is None:
            if self._compiler_arg:
                where = f"{self._compiler_arg} is not an executable"
            else:
                where = "edgetpu_compiler not found on PATH"
            raise TargetUnavailable(
                f"{where}: the Edge TPU needs {model.name} compiled; {INSTALL_HINT}, "
                "or give its path with --edgeopt-edgetpu-compiler=PATH"
            )
        else:
            if self._cache is None:
                self._cache = CompileCache(
                    self.cache_dir / "edgetpu", self.compiler, flags=self.compiler_flags, timeout_s=self.compile_timeout_s
                )
            res = self._cache.compile(model, check=False)
            prepared = PreparedModel(model, res.model, report, res.log, res.compiler_version, res.from_cache)
        self._prepared[memo_key] = prepared
        return prepared

    # -- run -------------------------------------------------------------------------------

    def _open(self, path: Path, threads: int) -> tuple[Any, Any]:
        """(interpreter with tensors allocated, delegate) for ``path`` on this device."""
        options = {"device": self.device.id} if self.device.id else {}
        make = _pycoral_make_interpreter() if self.library == DEFAULT_LIBRARY else None
        if make is not None:
            try:
                interp = make(str(path), device=self.device.id or None)
            except ValueError as e:
                raise TargetUnavailable(self._open_failed(e)) from None
            except OSError as e:
                raise TargetUnavailable(runtime_missing(self.library, e)) from None
            interp.allocate_tensors()
            return interp, None
        from ai_edge_litert.interpreter import Interpreter

        try:
            delegate = _quiet_delegate_class()(self.library, options)
        except OSError as e:
            raise TargetUnavailable(runtime_missing(self.library, e)) from None
        except (ValueError, AttributeError) as e:
            raise TargetUnavailable(self._open_failed(e)) from None
        try:
            interp = Interpreter(model_path=str(path), experimental_delegates=[delegate], num_threads=threads)
            interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            del delegate
            raise VariantBroken(f"{path.name} does not load with the Edge TPU delegate on {self.device.id}: {e}") from e
        return interp, delegate

    def _open_failed(self, error: BaseException) -> str:
        msg = str(error).strip() or type(error).__name__
        return (
            f"Edge TPU {self.device.id!r} could not be opened through {self.library}: {msg} "
            "(is it plugged in, and does your user have access: plugdev group for USB, apex group for PCIe?)"
        )

    def latency(self, model: Path, settings: LatencySettings) -> LatencyResult:
        prepared = self.prepare(model)
        clock = time.perf_counter_ns
        peak = PeakRss()
        peak.start()
        t0 = clock()
        interp, delegate = self._open(prepared.path, max(1, settings.threads))
        init_ns = clock() - t0
        try:
            io = ModelIO.of_interpreter(interp)
            rng = np.random.default_rng(0)
            for spec in io.inputs:
                interp.set_tensor(spec.index, _sample(spec, rng))
            # The first invoke loads the parameters into the Edge TPU: timed on its own.
            timed = time_invokes(interp.invoke, settings)
        except RuntimeError as e:
            raise VariantBroken(f"invoke failed on Edge TPU {self.device.id}: {e}") from e
        finally:
            del interp
            del delegate
        peak_mb = peak.peak_mb()
        log = prepared.compile_log
        return LatencyResult(
            stats=timed.stats,
            init_ms=init_ns / 1e6,
            first_inference_ms=timed.first_ms,
            extras=self._extras(prepared, settings.threads),
            profile=Profile(
                warmup_mean_ms=timed.warmup_mean_ms, peak_memory_mb=peak_mb,
                memory_source=SOURCE.replace("in the worker", "in the test process") if peak_mb is not None else None,
                placement=edgetpu_placement(prepared.report, log),
                edgetpu_onchip_bytes=log.on_chip_memory_used_bytes if log else None,
                edgetpu_offchip_bytes=log.off_chip_memory_used_bytes if log else None,
            ),
        )

    def predict(self, model: Path, inputs: np.ndarray) -> Sequence[np.ndarray]:
        """Float outputs for float ``inputs`` (sample axis first), run in chunks of the
        model's static batch (1 for Edge TPU models), the last chunk zero-padded."""
        prepared = self.prepare(model)
        interp, delegate = self._open(prepared.path, self.threads)
        try:
            io = ModelIO.of_interpreter(interp)
            if len(io.inputs) != 1:
                raise TargetError(f"the model has {len(io.inputs)} inputs; accuracy runs support one input")
            spec = io.inputs[0]
            batch = int(interp.get_input_details()[0]["shape"][0]) if spec.shape else 1
            batch = max(1, batch)
            inputs = np.asarray(inputs)
            chunks: list[list[np.ndarray]] = []
            for start in range(0, len(inputs), batch):
                x = inputs[start : start + batch]
                real = len(x)
                if real < batch:
                    x = np.concatenate([x, np.zeros((batch - real, *x.shape[1:]), dtype=x.dtype)])
                interp.reset_all_variables()  # independent samples: no RNN state from the last chunk
                interp.set_tensor(spec.index, to_model_input(x, spec))
                interp.invoke()
                outs = [interp.get_tensor(o.index)[:real] for o in io.outputs]
                chunks.append(outputs_to_float(outs, io.outputs))
            if not chunks:
                return [np.zeros((0, *[max(d, 1) for d in o.shape[1:]]), np.float32) for o in io.outputs]
            return [np.concatenate([c[i] for c in chunks]) for i in range(len(io.outputs))]
        except RuntimeError as e:
            raise VariantBroken(f"invoke failed on Edge TPU {self.device.id}: {e}") from e
        finally:
            del interp
            del delegate

    def _extras(self, prepared: PreparedModel, threads: int) -> dict[str, Any]:
        r = prepared.report
        return {
            "edgetpu_analysis": {
                "summary": r.summary,
                "edgetpu_op_fraction": r.edgetpu_op_fraction,
                "supported_op_fraction": r.supported_op_fraction,
                "fully_mapped": r.fully_mapped,
                "precompiled": r.precompiled,
            },
            "edgetpu_compile": prepared.compile_log.to_dict() if prepared.compile_log else None,
            "edgetpu_compiler_version": prepared.compiler_version,
            "edgetpu_compile_from_cache": prepared.from_cache,
            "delegate": self.library,
            "device": self.device.id,
            "threads": threads,
        }

    def close(self) -> None:
        self._prepared.clear()


def edgetpu_placement(report: EdgeTpuReport, log: CompileLog | None) -> Placement:
    """Where the model's ops run: on the Edge TPU as the compiler counted them (else as
    :func:`~pytest_edgeopt.targets.edgetpu.compat.analyze` predicts), ``partitions`` the
    runs of TPU / CPU ops in graph order (the ``yielding K partitions`` of a delegate), and
    every op left on the CPU by node index and type."""
    on = [o.on_edgetpu for o in report.ops]
    partitions = sum(1 for i, x in enumerate(on) if i == 0 or x != on[i - 1])
    total = log.total_ops if log is not None and log.total_ops else report.total_ops
    mapped = log.edgetpu_ops if log is not None and log.edgetpu_ops is not None else report.edgetpu_ops
    fallback = tuple((o.index, o.op) for o in report.ops if not o.on_edgetpu)
    return Placement(total, mapped, max(1, partitions) if total else 0, "edgetpu", fallback)


def _sample(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    return to_model_input(rng.random(shape, dtype=np.float32), spec)
