"""The device inventory: validation (each problem names the line and the field), and
discovery from it against a real adb server with emulated devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_edgeopt.farm.inventory import (
    EVERY_DEVICE,
    InventoryError,
    android_devices,
    cpu_devices,
    device_group,
    edgetpu_devices,
    load_inventory,
    parse_inventory,
)

GOOD = """\
[android]
benchmark_model = "bin/benchmark_model"

[android.pixel8]
serial = "38101FDJH00ABC"
adb = "farm-a.lan:5037"
affinity = "f0"
threads = 4

[android.lab-b]
serial = "*"
adb = "farm-b.lan:5038"

[edgetpu.coral]
device = "usb:0"
compiler = "/opt/edgetpu/edgetpu_compiler"

[cpu]
threads = [1, 4]
"""


def parse(text: str) -> object:
    return parse_inventory(text, Path("/lab/farm.toml"))


def test_a_good_inventory_loads_with_defaults_and_paths_relative_to_the_file() -> None:
    inv = parse(GOOD)
    pixel, lab = inv.android
    assert (pixel.label, pixel.serial, pixel.adb, pixel.affinity, pixel.threads) == (
        "pixel8", "38101FDJH00ABC", "farm-a.lan:5037", "f0", 4)
    assert pixel.benchmark_model == lab.benchmark_model == Path("/lab/bin/benchmark_model")
    assert lab.every and lab.serial == EVERY_DEVICE and lab.adb == "farm-b.lan:5038" and lab.threads is None
    (tpu,) = inv.edgetpu
    assert (tpu.label, tpu.device, tpu.compiler) == ("coral", "usb:0", Path("/opt/edgetpu/edgetpu_compiler"))
    assert inv.cpu_threads == (1, 4)
    assert pixel.line == 4 and tpu.line == 14


@pytest.mark.parametrize(("text", "line", "field", "problem"), [
    ('[android.p]\nserial = "R5"\naffinity = "zz"\n', 3, "android.p.affinity", "invalid CPU affinity mask 'zz'"),
    ('[android.p]\nserial = "R5"\nadb = "host:99999"\n', 3, "android.p.adb", "bad port"),
    ('[android.p]\nserial = "bad serial!"\n', 2, "android.p.serial", "invalid adb serial"),
    ('[android.p]\nadb = "h:5037"\n', 1, "android.p.serial", "missing"),
    ('[android.p]\nserial = "R5"\nthreads = 0\n', 3, "android.p.threads", "whole number >= 1"),
    ('[android.p]\nserial = "R5"\nbenchmark_model = 3\n', 3, "android.p.benchmark_model", "non-empty string"),
    ('[android.p]\nserial = "R5"\nbenchmark = "x"\n', 3, "android.p.benchmark", "unknown field; known: serial, adb"),
    ('[android]\nafinity = "f0"\n[android.p]\nserial = "R5"\n', 2, "android.afinity", "unknown field"),
    ('[android]\naffinity = "q"\n[android.p]\nserial = "R5"\n', 2, "android.affinity", "invalid CPU affinity"),
    ('[android.p]\nserial = "R5"\n[android.q]\nserial = "R5"\n', 4, "android.q.serial",
     "'R5' on adb server default is already [android.p]"),
    ('[android."my phone"]\nserial = "R5"\n', 1, "android.my phone", "label 'my phone' must be"),
    ('[android.p]\nserial = "R5"\n[edgetpu.p]\ndevice = "usb:0"\n', 3, "edgetpu.p", "label 'p' is already used"),
    ('[edgetpu.c]\ndevice = "usb0"\n', 2, "edgetpu.c.device", "invalid Edge TPU device 'usb0'"),
    ('[edgetpu.c]\ncompiler = "x"\n', 1, "edgetpu.c.device", "missing"),
    ('[edgetpu.c]\ndevice = "usb:0"\n[edgetpu.d]\ndevice = "usb:0"\n', 4, "edgetpu.d.device", "already [edgetpu.c]"),
    ('[cpu]\nthreads = [1, 1]\n', 2, "cpu.threads", "lists a thread count twice"),
    ('[cpu]\nthreads = "4"\n', 2, "cpu.threads", "whole number >= 1"),
    ('[cpu]\ncores = 4\n', 2, "cpu.cores", "unknown field; known: threads"),
    ('[phones.p]\nserial = "R5"\n', 1, "phones", "unknown table; known: android, edgetpu, cpu"),
    ('android = 3\n', 1, "android", "must be a table"),
    ('[android.p]\nserial = "R5"\naffinity = { a = 1 }\n', 3, "android.p.affinity", "non-empty string"),
    ('[android]\np = { serial = "R5", affinity = "zz" }\n', 2, "android.p.affinity", "invalid CPU affinity"),
    ('[android.p]\nserial = "R5\n', 2, "", "invalid TOML"),
])
def test_every_problem_names_the_line_and_the_field(text: str, line: int, field: str, problem: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"/lab/farm.toml:{line}: {field}{': ' if field else ''}"), message
    assert problem in message


def test_a_missing_file_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"nope\.toml: cannot read the device inventory"):
        load_inventory(tmp_path / "nope.toml")


def test_the_example_inventories_load() -> None:
    root = Path(__file__).parents[1] / "devices"
    examples = sorted(root.glob("farm*.example.toml"))
    assert len(examples) >= 2
    for path in examples:
        inv = load_inventory(path)
        assert inv.android, path


def test_cpu_thread_counts_become_host_devices() -> None:
    assert [d.label for d in cpu_devices(parse(GOOD)).devices] == ["1t", "4t"]
    (one,) = cpu_devices(parse("[cpu]\nthreads = 2\n")).devices
    assert one.id == "host" and one.label is None and one.details["threads"] == 2
    assert cpu_devices(parse("")).devices[0].details == {}


def test_edge_tpus_without_a_runtime_are_unavailable_naming_the_entry() -> None:
    (tpu,) = edgetpu_devices(parse(GOOD), library="/nonexistent/libedgetpu.so.1").devices
    assert tpu.label == "coral" and tpu.id == "usb:0" and tpu.details["compiler"] == "/opt/edgetpu/edgetpu_compiler"
    assert tpu.details["unavailable"].startswith("farm.toml [edgetpu.coral]: Edge TPU runtime")
    assert "lists no Edge TPU" in (edgetpu_devices(parse(""), library="x").missing or "")


@pytest.fixture(scope="module")
def second_phone(adb_server, tmp_path_factory: pytest.TempPathFactory):
    from devices.emulated_device import EmulatedDevice

    device = EmulatedDevice(tmp_path_factory.mktemp("phone2"), model="Second Emu")
    device.start()
    adb_server.connect(device.address, timeout=20)
    yield device
    adb_server.disconnect(device.address)
    device.stop()


def test_named_devices_keep_their_labels_and_every_attached_device_expands(
        adb_server, phone, second_phone, tmp_path: Path) -> None:
    from tests.adb_helpers import free_port

    dead = f"127.0.0.1:{free_port()}"
    path = tmp_path / "farm.toml"
    path.write_text(f"""
[android]
adb = "{adb_server.address}"
benchmark_model = "bm"

[android.main]
serial = "{phone.address}"
affinity = "f0"

[android.rest]
serial = "*"

[android.gone]
serial = "{dead}"
""")
    found = android_devices(load_inventory(path), timeout_s=5)
    assert found.missing is None
    by_label = {d.label: d for d in found.devices}
    rest = "rest-" + second_phone.address.replace(":", "_")
    assert set(by_label) == {"main", rest, "gone"}
    main = by_label["main"]
    assert main.id == phone.address and main.details["affinity"] == "f0" and main.details["inventory"] == "main"
    assert main.details["benchmark_model"] == str(tmp_path / "bm") and main.details["adb_server"] == adb_server.address
    assert "unavailable" not in main.details and "unavailable" not in by_label[rest].details
    assert by_label[rest].details["model"] == "Second Emu"
    gone = by_label["gone"].details["unavailable"]
    assert gone.startswith("farm.toml [android.gone]: device ") and "is not attached" in gone


def test_an_every_device_entry_with_nothing_attached_is_one_unavailable_device(tmp_path: Path) -> None:
    from tests.adb_helpers import free_port

    path = tmp_path / "farm.toml"
    path.write_text(f'[android.lab]\nserial = "*"\nadb = "127.0.0.1:{free_port()}"\n')
    (device,) = android_devices(load_inventory(path), timeout_s=2).devices
    assert device.label == "lab" and device.details["unavailable"].startswith("farm.toml [android.lab]: no adb server")


@pytest.mark.parametrize(("nodeid", "group"), [
    ("t.py::test[int8-android_gpu-pixel8]", "android:pixel8"),
    ("t.py::test[fp32-android_cpu-pixel8]", "android:pixel8"),
    ("t.py::Test::test[x-int8-android_cpu-pixel8-y]", "android:pixel8"),
    ("t.py::test[int8-android_cpu-lab-b-127.0.0.1_5555]", "android:lab-b-127.0.0.1_5555"),
    ("t.py::test[int8_full-edgetpu-coral]", "edgetpu:coral"),
    ("t.py::test[int8-cpu-4t]", None),
    ("t.py::test[int8-android_cpu-other]", None),
    ("t.py::test_plain", None),
])
def test_items_are_grouped_by_the_device_their_id_names(nodeid: str, group: str | None) -> None:
    kinds = {"cpu": "host", "android_gpu": "android", "android_cpu": "android", "edgetpu": "edgetpu"}
    assert device_group(nodeid, parse(GOOD), kinds) == group
