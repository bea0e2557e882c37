"""The ``--edgeopt-html`` report, from a real recorded run.

``tests/data/edgeopt_example_run.json`` is the ``--edgeopt-json`` document of a real session:
the digits CNN's fp32 and 10 optimized variants, each with ``check(max_accuracy_drop=0.01)``
(and ``require_full_delegation`` on android_gpu), on three targets: the host ``cpu`` and the
emulated phone of ``devices/`` (``android_cpu``, ``android_gpu``) through a real adb server, the
``benchmark_model`` stand-in running the models. Seven items failed, so the report has FAIL
rows. Trimmed to stay small: every ``samples_us`` cut to 50 evenly spaced samples (the stored
p50/p90 are those of the full run), raw benchmark output, machine paths and ``model_path`` dropped.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_edgeopt.runs.charts import pareto_front
from pytest_edgeopt.runs.html import render_html, write_html
from pytest_edgeopt.runs.rows import merge

DATA = Path(__file__).parent / "data" / "edgeopt_example_run.json"
PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["model", "variant", "target", "size KiB", "gzip KiB", "size −", "p50 ms", "p90 ms", "speedup",
           "metric", "drop", "vs source", "build", "result"]


class Page(HTMLParser):
    """What the tests look at: tags with their attributes, the summary table, section ids, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headers: list[str] = []
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.sections: list[str] = []
        self.text: list[str] = []
        self._table = False
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "table" and "summary" in (a.get("class") or "").split():
            self._table = True
        elif self._table and tag == "tr" and a.get("data-variant") is not None:
            self.rows.append((a, []))
        elif self._table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = False
        elif self._table and tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            (self.rows[-1][1] if tag == "td" else self.headers).append(text)
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def images(self) -> list[str]:
        return [a.get("src") or "" for t, a in self.tags if t == "img"]


@pytest.fixture(scope="module")
def doc() -> dict:
    d = json.loads(DATA.read_text())
    d["run"] = {"name": "nightly-42", "time": "2026-11-23T19:02:33+00:00", "commit": "e998fe0c0ffee",
                "dirty": True, "machine": {"hostname": "ci-runner-1", "cpu": "x86_64"}}
    return d


@pytest.fixture(scope="module")
def html(doc: dict) -> str:
    return render_html(doc)


@pytest.fixture(scope="module")
def page(html: str) -> Page:
    return Page(html)


def _embedded(attrs: dict) -> bool:
    return (attrs.get("src") or "").startswith("data:image/png;base64,")


def _older(doc: dict, hours: int, slower: float) -> dict:
    """An earlier run: the same document, its time and latencies changed."""
    d = copy.deepcopy(doc)
    d["created"] = d["run"]["time"] = f"2026-11-2{3 - hours // 24}T{18 - hours % 24:02d}:00:00+00:00"
    d["run"].update(name=f"run-{hours}", commit=f"{hours:07x}")
    for r in d["measurements"]:
        if r.get("measurement"):
            r["measurement"]["derived"]["p50_ms"] *= slower
    return d


def test_the_table_has_one_row_per_model_variant_target_and_device(doc: dict, page: Page) -> None:
    rows = merge(doc["measurements"])
    assert page.headers == COLUMNS
    assert len(page.rows) == len(rows) == 33
    got = [(a["data-variant"], a["data-target"], a["data-device"]) for a, _ in page.rows]
    assert got == [(r["variant"], r["target"], r["device"]) for r in rows]
    assert {a["data-target"] for a, _ in page.rows} == {"cpu", "android_cpu", "android_gpu"}


def test_the_table_figures_are_the_documents(doc: dict, page: Page) -> None:
    for (attrs, cells), row in zip(page.rows, merge(doc["measurements"])):
        c = dict(zip(COLUMNS, cells))
        m = row["measurement"]
        d = m["derived"]
        assert c["size KiB"] == f"{d['size_bytes'] / 1024:,.1f}"
        assert c["gzip KiB"] == f"{d['compressed_size_bytes'] / 1024:,.1f}"
        assert c["size −"] == f"{100 * d['size_reduction']:.1f}%"
        assert float(c["p50 ms"]) == pytest.approx(d["p50_ms"], rel=1e-3)
        assert float(c["p90 ms"]) == pytest.approx(m["latency"]["p90_ms"], rel=1e-3)
        assert c["speedup"] == f"{d['speedup']:.2f}x"
        assert c["metric"] == f"top1 {d['metric']:.4f}"
        assert c["drop"] == f"{d['accuracy_drop']:+.4f}"
        assert c["target"] == (row["target"] if row["device"] == "host" else f"{row['target']}/{row['device']}")


def test_results_are_classed_and_coloured(doc: dict, html: str, page: Page) -> None:
    failed = {(r["variant"], r["target"]) for r in doc["measurements"] if r["outcome"] == "failed"}
    assert len(failed) == 7
    for attrs, cells in page.rows:
        want = "FAIL" if (attrs["data-variant"], attrs["data-target"]) in failed else "PASS"
        assert (cells[-1], attrs["class"]) == (want, want.lower())
    for cls in ("pass", "fail", "base", "skip"):
        assert re.search(rf"\.{cls} td\.result[^{{]*\{{[^}}]*background", html), cls


def test_the_header_shows_run_machine_and_versions(doc: dict, page: Page) -> None:
    text = " ".join(page.text)
    for value in ("nightly-42", "2026-11-23T19:02:33+00:00", "e998fe0c0ffee", "uncommitted",
                  "ci-runner-1 · cpu x86_64", "3.11.7", *doc["environment"]["packages"].values()):
        assert str(value) in text


def test_the_header_reads_a_saved_runs_metadata(doc: dict) -> None:
    """The layout store.save_run writes: run {number, name, saved, commit, dirty}, metadata {git, machine...}."""
    d = {k: v for k, v in doc.items() if k not in ("run", "environment")}
    d["measurements"] = [r for r in doc["measurements"] if r["target"] == "cpu"][:2]
    d["run"] = {"number": 7, "name": "nightly", "saved": "2026-11-24T02:00:00+00:00", "commit": "c287fa8",
                "dirty": False}
    d["metadata"] = {"git": {"commit": "c287fa8", "branch": "main", "dirty": False}, "python": "3.11.7",
                     "machine": {"hostname": "ci-7", "cpu_model": "Xeon", "cores": 2, "memory_bytes": 2**34},
                     "packages": {"tensorflow": "2.21.0"}}
    text = " ".join(Page(render_html(d)).text)
    for value in ("#7 nightly", "2026-11-24T02:00:00+00:00", "c287fa8", "on main",
                  "ci-7 · Xeon · 2 cores · 16.0 GiB memory", "tensorflow", "2.21.0"):
        assert value in text
    assert "uncommitted" not in text


def test_every_test_not_passed_is_listed_with_its_reason(doc: dict, page: Page) -> None:
    text = " ".join(page.text)
    for r in doc["measurements"]:
        if r["outcome"] != "passed":
            assert r["test"] in text
            assert r["reason"].split(": ", 1)[1].splitlines()[0] in text


def test_plots_are_embedded_pngs(page: Page) -> None:
    srcs = page.images()
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for src in srcs:
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)
    assert page.sections == ["summary", "not-passed", "recommendation", "size-accuracy", "latency", "profile"]


def test_nothing_is_fetched_from_elsewhere(html: str, page: Page) -> None:
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    refs = [v for _, a in page.tags for k, v in a.items() if k in ("src", "href") and v]
    assert refs and all(v.startswith("data:") or v.startswith("#") for v in refs)
    assert not re.search(r"https?://|@import|url\(", html)


def test_text_from_the_document_is_escaped(doc: dict) -> None:
    evil = '<script>alert("x")</script> $a$b & co'
    d = copy.deepcopy(doc)
    for r in d["measurements"]:
        r["model"] = evil
        if r.get("measurement"):
            r["measurement"]["model"] = r["measurement"]["baseline"]["model"] = evil
    d["measurements"][0]["reason"] = "<img src=x onerror=alert(1)>"
    d["measurements"][0]["outcome"] = "skipped"
    d["run"]["commit"] = '"><marquee>'
    out = render_html(d)
    p = Page(out)
    assert [t for t, _ in p.tags if t in ("script", "img", "marquee") and not (t == "img" and _embedded(_))] == []
    assert len(p.images()) >= 2
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; $a$b &amp; co" in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert {a["data-model"] for a, _ in p.rows} == {evil}


def test_trends_appear_only_with_an_earlier_run(doc: dict, html: str) -> None:
    assert 'id="trends"' not in html
    assert 'id="trends"' not in render_html(doc, [doc])  # the same run twice is one run
    out = render_html(doc, [_older(doc, 48, 1.5), _older(doc, 24, 1.2)])
    p = Page(out)
    assert p.sections[-1] == "trends"
    assert "Trends over 3 runs" in " ".join(p.text)
    assert len(p.images()) == 4  # size-accuracy, latency, lifecycle, trends
    assert base64.b64decode(p.images()[-1].split(",", 1)[1]).startswith(PNG)


def test_write_html_writes_the_rendered_page(doc: dict, tmp_path: Path) -> None:
    d = copy.deepcopy(doc)
    d["measurements"] = [r for r in d["measurements"] if r["variant"] in ("fp32", "int8") and r["target"] == "cpu"]
    out = tmp_path / "sub" / "report.html"
    write_html(out, d)
    p = Page(out.read_text(encoding="utf-8"))
    assert [a["data-variant"] for a, _ in p.rows] == ["fp32", "int8"]
    assert [f.name for f in out.parent.iterdir()] == ["report.html"]


def test_importing_the_module_loads_no_matplotlib() -> None:
    code = "import sys, pytest_edgeopt.runs.html; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize(("points", "front"), [
    ([(10, 0.9), (20, 0.95), (15, 0.8), (30, 0.95), (5, 0.5)], [4, 0, 1]),
    ([(1, 0.9), (1, 0.9)], [0]),                       # identical points: the first
    ([(2, 0.9), (1, 0.9)], [1]),                       # same metric: the smaller
    ([(1, 0.9), (1, 0.95)], [1]),                      # same size: the more accurate
    ([], []),
])
def test_pareto_front_keeps_the_non_dominated_points(points, front) -> None:
    assert pareto_front(points) == front


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless chromium (Debian: apt-get install chromium)")
def test_a_real_browser_renders_the_report(html: str, tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    page = tmp_path / "report.html"
    shot = tmp_path / "shot.png"
    page.write_text(html, encoding="utf-8")
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=90, check=True)
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1400)
    # Not blank: many colours (table, coloured result cells, plots), and far from all white.
    rgb = (pixels * 255).astype(np.uint32)
    colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
    assert len(colours) > 200 and not math.isclose(float(pixels.mean()), 1.0, abs_tol=0.005)


def test_rows_without_figures_still_render(doc: dict) -> None:
    """A skipped item, a built-only item and a model without eval data: table rows, no broken plot."""
    cpu = [copy.deepcopy(r) for r in doc["measurements"] if r["target"] == "cpu"]
    skipped, built_only, *measured = cpu[:4]
    skipped.update(outcome="skipped", measurement=None, built=None, reason="no Android device: pass --edgeopt-serial")
    built_only.update(measurement=None)
    for r in measured:
        for o in (r["measurement"], r["measurement"]["baseline"]):
            o["accuracy"] = None
        r["measurement"]["derived"].update(metric=None, metric_name=None, accuracy_drop=None)
    d = {**doc, "measurements": [skipped, built_only, *measured]}
    p = Page(render_html(d))
    results = {a["data-variant"]: (a["class"], dict(zip(COLUMNS, cells))) for a, cells in p.rows}
    assert results[skipped["variant"]][0] == "skip"
    assert results[built_only["variant"]][1]["size KiB"] == f"{built_only['built']['size_bytes'] / 1024:,.1f}"
    assert results[measured[0]["variant"]][1]["metric"] == ""
    assert "no Android device: pass --edgeopt-serial" in " ".join(p.text)
    assert "size-accuracy" in p.sections and len(p.images()) == 2  # latency and lifecycle: no metric to plot


def test_recommendation_section_names_the_variant_to_ship() -> None:
    from pytest_edgeopt.runs.recommend import recommend

    doc = json.loads(DATA.read_text())
    page = render_html(doc)
    assert '<section id="recommendation">' in page
    for rec in recommend(doc["measurements"]):
        if rec.smallest is not None:
            assert f"smallest file:     {rec.smallest.variant}".split()[-1] in page
