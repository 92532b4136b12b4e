"""The HTML evaluation report: a self-contained folder, one row per case worst first, checked in headless Chromium."""

from __future__ import annotations

import contextlib
import csv
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import chromium
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hieseg.cli import evaluate as evaluate_cli
from hieseg.evaluation.baselines import baseline_mask_image
from hieseg.io.layout import discover_cases, load_case
from hieseg.reports.html import REPORT_HTML, table_section, versions

PRED_NAME, BASELINE_NAME = "model_a", "zadc_lt2"


class ReportParser(HTMLParser):
    """The links, scripts and per-case rows (each cell's data-sort value) of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.external_resources: list[str] = []
        self.rows: list[list[str | None]] = []
        self.headers: list[dict[str, str | None]] = []
        self._in_cases = self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("img", "a") and (values.get("src") or values.get("href")):
            self.links.append(values.get("src") or values.get("href") or "")
        if (tag == "script" and values.get("src")) or tag == "link":
            self.external_resources.append(str(values))
        if tag == "table" and values.get("id") == "case-table":
            self._in_cases = True
        if self._in_cases and tag == "th" and "data-col" in values:
            self.headers.append(values)
        if self._in_cases and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self.rows[-1].append(values.get("data-sort"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_cases = self._in_body = False


@pytest.fixture(scope="module")
def report(small_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """evaluate --html of an imperfect prediction folder beside the Z_ADC < -2 baseline, on 8 cases."""
    root = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    for files in discover_cases(small_release):
        case = load_case(files)
        truth = sitk.GetArrayFromImage(case.label) > 0
        shift = int(rng.integers(0, 3))
        pred = np.roll(ndimage.binary_dilation(truth), shift, axis=2) if shift else np.zeros_like(truth)
        masks = {PRED_NAME: pred.astype(np.uint8), BASELINE_NAME: None}
        for name, mask in masks.items():
            image = baseline_mask_image(name, case.zadc) if mask is None else sitk.GetImageFromArray(mask)
            image.CopyInformation(case.label)
            (root / name).mkdir(exist_ok=True)
            sitk.WriteImage(image, str(root / name / f"{files.case_id}.mha"))
    html_dir = root / "report"
    argv = ["--pred", str(root / PRED_NAME), "--truth", str(small_release), "--out", str(root / "eval"),
            "--html", str(html_dir), "--beside", str(root / BASELINE_NAME)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate_cli.main(argv) == 0
    return html_dir


def parsed(report: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed((report / REPORT_HTML).read_text(encoding="utf-8"))
    return parser


def per_case(report: Path) -> list[dict[str, str]]:
    with open(report.parent / "eval" / "per_case.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_folder_opens_offline_every_link_inside_it(report: Path) -> None:
    page = parsed(report)
    assert page.external_resources == []  # CSS and script inline
    files = [link for link in page.links if not link.startswith("#")]
    assert len(files) >= 2 * 2 * 8  # each method's thumbnail and full picture of every case
    for link in files:
        assert not urlparse(link).scheme and not link.startswith("/"), link
        target = (report / unquote(link)).resolve()
        assert target.is_file() and report.resolve() in target.parents, link
    assert (report / "boxplots.png").is_file()


def test_one_row_per_case_worst_first_with_both_methods(report: Path) -> None:
    page = parsed(report)
    cases = per_case(report)
    assert sorted(row[0] for row in page.rows) == sorted(r["case_id"] for r in cases)
    dice_header = next(h for h in page.headers if h.get("aria-sort") == "ascending")
    column = int(dice_header["data-col"])
    shown = [float(row[column]) for row in page.rows]
    by_case = {r["case_id"]: float(r["dice"]) for r in cases}
    assert shown == sorted(shown) and shown == [by_case[row[0]] for row in page.rows]
    text = (report / REPORT_HTML).read_text(encoding="utf-8")
    for name in (PRED_NAME, BASELINE_NAME):
        assert f"qc/{name}/" in text and f">{name}</th>" in text


def test_settings_and_versions_are_recorded(report: Path) -> None:
    text = (report / REPORT_HTML).read_text(encoding="utf-8")
    for name, version in versions().items():
        if name in ("hieseg", "torch", "MONAI", "SimpleITK"):
            assert f"<th scope=\"row\">{name}</th><td>{version}</td>" in text
    assert "nsd_tolerance_mm" in text


def test_a_table_section_escapes_its_cells() -> None:
    section = table_section("cost", "Cost", ["network / loss", "parameters"], [["unet / <dice>", 1000]], note="a & b")
    assert (section.anchor, section.heading) == ("cost", "Cost")
    assert "<th>network / loss</th><th>parameters</th>" in section.body
    assert '<tr><td class="name">unet / &lt;dice&gt;</td><td class="">1000</td></tr>' in section.body
    assert '<p class="note">a &amp; b</p>' in section.body


def test_beside_needs_html(tmp_path: Path, small_release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--pred", str(tmp_path), "--truth", str(small_release), "--out", str(tmp_path / "eval"),
            "--beside", str(tmp_path)]
    assert evaluate_cli.main(argv) == 2
    assert "--html" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


SORT_CHECK = """
(function () {
  var table = document.getElementById("case-table");
  function column(index) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (row) {
      return row.cells[index].getAttribute("data-sort");
    });
  }
  function click(header) { header.querySelector("button").click(); return column(Number(header.dataset.col)); }
  var headers = table.querySelectorAll("th[data-col]");
  var nsd = Array.prototype.filter.call(headers, function (h) { return h.textContent === "NSD"; })[0];
  var caseHeader = headers[0];
  return {first: click(nsd), second: click(nsd), state: nsd.getAttribute("aria-sort"), cases: click(caseHeader)};
}())
"""


def test_report_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    reason = chromium.available()
    if reason:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    with chromium.Chromium() as browser:
        page = browser.open((report / REPORT_HTML).resolve().as_uri())
        rows = page.evaluate("document.querySelectorAll('#case-table tbody tr').length")
        images = page.evaluate("Array.prototype.map.call(document.images, function (i) {"
                               " return [i.getAttribute('src'), i.complete && i.naturalWidth > 0]; })")
        sorted_columns = page.evaluate(SORT_CHECK)
        page.screenshot(tmp_path / "report.png")
        errors = page.console_errors()
    assert errors == []
    assert rows == len(per_case(report))
    assert len(images) == 1 + 2 * rows and all(loaded for _, loaded in images), images
    first = [float(value) for value in sorted_columns["first"]]
    assert first == sorted(first) and first[0] < first[-1]  # first click: worst (lowest NSD) first
    assert [float(value) for value in sorted_columns["second"]] == sorted(first, reverse=True)
    assert sorted_columns["state"] == "descending"
    assert sorted_columns["cases"] == sorted(sorted_columns["cases"])
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
