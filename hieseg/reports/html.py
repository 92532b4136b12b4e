"""HTML reports of scored cases, one folder that opens offline: evaluation, comparison and study.

A report folder holds ``report.html`` and every picture it shows, as files beside it:

    report.html                      the page; CSS and the sorting script inline, nothing fetched
    boxplots.png                     per-case Dice, MASD and NSD of each method (:mod:`hieseg.reports.plots`)
    qc/<method>/<case>.png           the case's QC picture (:mod:`hieseg.reports.qc`); in a study <network>/<loss>/
    qc/<method>/<case>.thumb.png     its error row on the axial slices with the most error

The page shows, top to bottom: the summary (mean ± std and median of each metric, per method,
overall and per burden group, the best method per group in bold), the box plots, any extra
sections (the study's cost per method and validation curves), one row per case with each
method's QC thumbnail (linking to the full picture) and scores, worst first (lowest Dice of the
first method), sortable by any column with a click, and the settings and library versions that
produced it. Several methods (models, baselines, losses, a study's networks and losses) are
shown side by side, in the order given.

Opening it needs nothing but a browser: no server, no network, no CDN. Every file is written
atomically and ``report.html`` last, so it never points at a picture that is not there yet.
QC pictures newer than their inputs are kept, so a rerun (a resumed study) redraws only what changed.
"""

from __future__ import annotations

import datetime
import html
import math
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import matplotlib
import SimpleITK as sitk
from tqdm import tqdm

from hieseg.data.burden import BURDEN_GROUPS
from hieseg.evaluation.lesions import LESION_NOTE, describe_rate
from hieseg.evaluation.metrics import (
    CEILING_METRIC,
    HIGHER_IS_BETTER,
    LESION_WISE,
    METRIC_TITLES,
    SUMMARY_METRICS,
    CaseMetrics,
    official_mean_masd,
    summarize,
)
from hieseg.io.images import read_image, write_atomic
from hieseg.io.tables import best_per_metric
from hieseg.reports.plots import (
    one_empty_count,
    plot_metric_boxes,
    plot_validation_curves,
)
from hieseg.reports.qc import (
    CLASS_COLOURS,
    CLASS_NAMES,
    FN,
    FP,
    TP,
    QcSettings,
    write_qc,
)
from hieseg.runtime.versions import code_state, command_name, library_versions

REPORT_HTML = "report.html"
BOXPLOTS_PNG = "boxplots.png"
CURVES_PNG = "validation_curves.png"
QC_DIR = "qc"
THUMBNAIL_SUFFIX = ".thumb.png"
ALL_CASES = "all"
SHADE_COLOUR = (213, 94, 0)
"""Okabe-Ito vermillion: per-case cells are tinted with it, stronger the worse the score."""
MASD_SHADE_FULL_MM = 50.0
"""MASD from which a cell gets the full tint (the tint grows with log(1 + MASD) up to it)."""


@dataclass(frozen=True)
class MethodRows:
    """One method's per-case scores, in the report: a model, a baseline, a loss or a prediction folder."""

    name: str
    rows: Sequence[CaseMetrics]
    description: str = ""
    folder: str = ""
    """Where its QC pictures go under ``qc/`` (e.g. ``unet/dice``); empty: its name."""


@dataclass(frozen=True)
class QcImages:
    """The images a QC picture of a case needs: its ADC, Z_ADC and truth files."""

    adc: Path
    zadc: Path
    truth: Path


@dataclass(frozen=True)
class Section:
    """An extra part of the page: a heading and its HTML body (already escaped)."""

    anchor: str
    heading: str
    body: str


def render_qc(
    report_dir: Path,
    methods: Sequence[MethodRows],
    images: Mapping[str, QcImages],
    predictions: Mapping[str, Mapping[str, Path | None]],
    settings: QcSettings = QcSettings(),
    progress: bool = True,
) -> dict[tuple[str, str], str]:
    """Draw each method's QC picture and thumbnail of every case into ``report_dir/qc``.

    ``predictions[method][case]`` is the mask file (``None``: no prediction, drawn as empty).
    Returns the picture's path relative to ``report_dir`` for each (method, case). A picture
    newer than all of its inputs is kept as it is.
    """
    pictures: dict[tuple[str, str], str] = {}
    case_ids = [row.case_id for row in methods[0].rows] if methods else []
    bar = tqdm(total=len(case_ids) * len(methods), desc="QC pictures", unit="picture", disable=None if progress else True)
    with bar:
        for case_id in case_ids:
            files = images[case_id]
            loaded: dict[str, sitk.Image] = {}
            for method in methods:
                pred_path = predictions[method.name][case_id]
                relative = f"{QC_DIR}/{method.folder or method.name}/{case_id}.png"
                full, thumbnail = report_dir / relative, report_dir / _thumbnail_of(relative)
                inputs = [files.adc, files.zadc, files.truth] + ([pred_path] if pred_path is not None else [])
                if not _up_to_date([full, thumbnail], inputs):
                    if not loaded:
                        loaded = {name: read_image(getattr(files, name)) for name in ("adc", "zadc", "truth")}
                    pred = read_image(pred_path) if pred_path is not None else _empty_like(loaded["truth"])
                    metrics = next(row for row in method.rows if row.case_id == case_id)
                    write_qc(loaded["adc"], loaded["zadc"], pred, loaded["truth"], full, case_id=f"{case_id} · {method.name}",
                             settings=settings, thumbnail=thumbnail, metrics=metrics)
                pictures[(method.name, case_id)] = relative
                bar.update()
    return pictures


def write_report(
    report_dir: Path,
    *,
    title: str,
    methods: Sequence[MethodRows],
    settings: Mapping[str, object],
    intro: Sequence[str] = (),
    qc: Mapping[tuple[str, str], str] | None = None,
    qc_note: str = "",
    sections: Sequence[Section] = (),
) -> Path:
    """Write boxplots.png and report.html into ``report_dir`` (QC pictures already drawn); return the page's path.

    ``intro`` paragraphs are plain text; ``qc`` maps (method, case) to the QC picture's relative
    path (from :func:`render_qc`); ``qc_note`` says why there are none when ``qc`` is None.
    Every method must hold the same cases.
    """
    report_dir = Path(report_dir)
    _check_same_cases(methods)
    plot_metric_boxes({method.name: method.rows for method in methods}, report_dir / BOXPLOTS_PNG)
    n_cases = len(methods[0].rows) if methods else 0
    parts = [
        f"<header><h1>{_text(title)}</h1>",
        f"<p class=\"meta\">{n_cases} case(s) · {len(methods)} method(s) · generated "
        f"{_text(datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'))}</p>",
        *(f"<p>{_text(paragraph)}</p>" for paragraph in intro),
        _navigation(sections),
        "</header>",
        _section("summary", "Summary", _summary_body(methods)),
        _section("plots", "Per-case distributions",
                 f'<img class="plot" src="{BOXPLOTS_PNG}" alt="box plots of Dice, MASD and NSD per method">'
                 "<p class=\"note\">Each point is a case. MASD is on a logarithmic axis above 1 mm so that a method "
                 "failing on some cases (empty masks score the image diagonal) does not flatten the others.</p>"),
        *(_section(section.anchor, section.heading, section.body) for section in sections),
        _section("cases", "Cases, worst first", _cases_body(methods, qc, qc_note)),
        _section("settings", "Settings and versions", _settings_table({**settings, "versions": versions()})),
    ]
    page = _page(title, "\n".join(parts))
    path = report_dir / REPORT_HTML
    write_atomic(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return path


def write_study_report(
    report_dir: Path,
    methods: Sequence[MethodRows],
    curves: Mapping[str, Mapping[int, float]],
    settings: Mapping[str, object],
    qc: Mapping[tuple[str, str], str] | None = None,
    qc_note: str = "",
    sections: Sequence[Section] = (),
) -> Path:
    """The study's report: :func:`write_report` with ``sections`` (e.g. each method's cost) and the validation
    curves, one method per (network, loss)."""
    plot_validation_curves(curves, Path(report_dir) / CURVES_PNG)
    curves_section = Section(
        "curves", "Validation curves",
        f'<img class="plot" src="{CURVES_PNG}" alt="validation Dice against epoch, one line per network and loss">'
        "<p class=\"note\">Validation Dice of each network and loss, mean over the folds that validated at that "
        "epoch.</p>",
    )
    intro = ("Every network and loss trained with the same folds, seed and budget, and scored on its held-out fold "
             "in the native grid: each case is scored once per (network, loss), by the model that never trained "
             "on it.",)
    return write_report(report_dir, title="Network and loss study", methods=methods, settings=settings, intro=intro,
                        qc=qc, qc_note=qc_note, sections=[*sections, curves_section])


def table_section(anchor: str, heading: str, header: Sequence[str], rows: Sequence[Sequence[object]],
                  note: str = "") -> Section:
    """An extra section holding one plain table (cells and ``note`` are text, escaped here), e.g. the study's
    cost per method; the first column is a name, left-aligned."""
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"{'name' if index == 0 else ''}\">{_text(_plain(cell))}</td>"
                         for index, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    html_body = (f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                 + (f"<p class=\"note\">{_text(note)}</p>" if note else ""))
    return Section(anchor, heading, html_body)


def versions() -> dict[str, str]:
    """The versions of the code that produced a report: hieseg (with its git commit), its libraries, Python."""
    running = library_versions()
    found = {
        "hieseg": running["hieseg"],
        "torch": running["torch"],
        "MONAI": running["monai"],
        "SimpleITK": running["simpleitk"],
        "numpy": running["numpy"],
        "matplotlib": matplotlib.__version__,
        "Python": running["python"],
    }
    commit, dirty = code_state()
    if commit:
        found["git commit"] = commit + (" with local changes" if dirty else "")
    found["command"] = " ".join([command_name(Path(sys.argv[0])), shlex.join(sys.argv[1:])]).strip()
    return found


def _summary_body(methods: Sequence[MethodRows]) -> str:
    """One table: a block of rows per group (all, then each burden group with cases), one row per method."""
    metrics = [m for m in (*SUMMARY_METRICS, CEILING_METRIC) if any(_has(method.rows, m) for method in methods)]
    lesion_wise = all(row.truth_lesions is not None for method in methods for row in method.rows)
    header = ["group", "method", "n", *(METRIC_TITLES[m] for m in metrics), "MASD official (mm) (k)",
              "one empty mask", *(("lesions found (F1)", "conspicuous found (recall)") if lesion_wise else ())]
    lines = ["<div class=\"scroll\"><table class=\"summary\"><thead><tr>",
             *(f"<th>{_text(cell)}</th>" for cell in header), "</tr></thead><tbody>"]
    for group in _groups(methods):
        group_rows = {m.name: [r for r in m.rows if group == ALL_CASES or r.burden_group == group] for m in methods}
        statistics = {name: summarize(list(rows))["overall"] for name, rows in group_rows.items()}
        best = best_per_metric(statistics, HIGHER_IS_BETTER) if len(methods) > 1 else {}
        for position, method in enumerate(methods):
            stats, rows = statistics[method.name], group_rows[method.name]
            cells = []
            if position == 0:
                label = "all cases" if group == ALL_CASES else f"burden {group}"
                cells.append(f"<th rowspan=\"{len(methods)}\" scope=\"rowgroup\">{_text(label)}</th>")
            cells += [f"<td class=\"name\" title=\"{_text(method.description)}\">{_text(method.name)}</td>",
                      f"<td>{stats['n']}</td>"]
            for metric in metrics:
                values = stats.get(metric)
                text = "–" if values is None else (
                    f"{values['mean']:.3f} ± {values['std']:.3f}<br><small>median {values['median']:.3f}</small>")
                bold = method.name in best.get(metric, set())
                cells.append(f"<td class=\"{'best' if bold else ''}\">{text}</td>")
            official = official_mean_masd(list(rows))
            cells.append("<td>–</td>" if official["mean"] is None else
                         f"<td>{official['mean']:.3f} ({official['n']})</td>")
            cells.append(f"<td>{one_empty_count(rows)}</td>")
            if lesion_wise:
                cells += [f"<td>{_text(cell)}</td>" for cell in _lesion_summary(stats.get(LESION_WISE))]
            lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    lines.append(
        "<p class=\"note\">Mean ± population std, and median, over the cases, scored on the native grid in mm. "
        "Burden group: truth lesion volume / brain volume (ADC &gt; 0). A case with exactly one empty mask scores "
        "Dice 0, NSD 0 and MASD = the image diagonal (counted under <em>one empty mask</em>); two empty masks "
        "score Dice 1, NSD 1, MASD 0. <em>MASD official</em>: the mean over the k cases whose masks are both "
        "non-empty, as the challenge's script averages. <em>ceiling Dice</em>: the truth after a round trip "
        "through the model's grid, the best any model on that grid can reach. "
        + (_text(LESION_NOTE) if lesion_wise else "")
        + (" <strong>Bold</strong>: the best method of the group (highest Dice and NSD, lowest MASD)."
           if len(methods) > 1 else "") + "</p>"
    )
    return "\n".join(lines)


def _lesion_summary(totals: Mapping | None) -> list[str]:
    """The lesion-wise cells of a summary row: lesions found with their F1, conspicuous lesions found with recall."""
    if totals is None:
        return ["–", "–"]
    found = f"{totals['found_lesions']}/{totals['truth_lesions']} ({describe_rate(totals['lesion_f1'])})"
    conspicuous = ("–" if totals["conspicuous_lesions"] is None else
                   f"{totals['conspicuous_found']}/{totals['conspicuous_lesions']} "
                   f"({describe_rate(totals['conspicuous_recall'])})")
    return [found, conspicuous]


def _cases_body(methods: Sequence[MethodRows], qc: Mapping[tuple[str, str], str] | None, qc_note: str) -> str:
    """The per-case table, rows in the default order (worst first), and how to read it."""
    if not methods:
        return "<p>No cases.</p>"
    metrics = [m for m in (*SUMMARY_METRICS, CEILING_METRIC) if any(_has(method.rows, m) for method in methods)]
    by_method = {method.name: {row.case_id: row for row in method.rows} for method in methods}
    first = methods[0]
    order = sorted(first.rows, key=lambda r: (_sort_number(r.dice), -_sort_number(r.masd_mm, math.inf), r.case_id))
    per_method = ([("qc", "QC")] if qc is not None else []) + [(m, METRIC_TITLES[m]) for m in metrics]
    per_method.append(("pred_ml", "pred (ml)"))
    top = ["<tr>", _sortable("case", 0, "text", "ascending", rowspan=2),
           _sortable("burden (%)", 1, "number", "descending", rowspan=2),
           _sortable("truth (ml)", 2, "number", "descending", rowspan=2)]
    top += [f"<th colspan=\"{len(per_method)}\" scope=\"colgroup\" title=\"{_text(m.description)}\">{_text(m.name)}</th>"
            for m in methods]
    top.append("</tr>")
    second = ["<tr>"]
    column = 3
    for method_index, method in enumerate(methods):
        for metric, title in per_method:
            if metric == "qc":
                second.append("<th>QC</th>")
            else:
                worst = "descending" if metric in ("masd_mm", "pred_ml") else "ascending"
                current = "ascending" if method_index == 0 and metric == "dice" else None
                second.append(_sortable(title, column, "number", worst, current=current))
            column += 1
    second.append("</tr>")
    body = []
    for first_row in order:
        case_id = first_row.case_id
        cells = [
            f"<td class=\"case\" data-sort=\"{_text(case_id)}\"><strong>{_text(case_id)}</strong></td>",
            _number_cell(100 * first_row.burden_fraction, 2, extra=f" <small>{_text(first_row.burden_group)}</small>"),
            _number_cell(first_row.truth_ml, 2),
        ]
        for method in methods:
            row = by_method[method.name][case_id]
            if qc is not None:
                full = qc[(method.name, case_id)]
                cells.append(
                    f"<td class=\"qc\"><a href=\"{_url(full)}\"><img src=\"{_url(_thumbnail_of(full))}\" "
                    f"alt=\"QC of {_text(case_id)}, {_text(method.name)}\"></a></td>")
            cells += [_number_cell(getattr(row, metric), 2 if metric == "masd_mm" else 3, shade=_shade(metric, row))
                      for metric in metrics]
            cells.append(_number_cell(row.pred_ml, 2))
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = "".join(
        f"<span class=\"swatch\" style=\"background:{CLASS_COLOURS[label]}\"></span>{_text(CLASS_NAMES[label])} "
        for label in (TP, FN, FP)
    )
    how = (f"<p>Sorted worst first by {_text(first.name)}'s Dice; click a column heading to sort by it (first click: "
           "worst first, second click: reverse). Cells are tinted the more, the worse the score.</p>")
    qc_text = (f"<p>QC thumbnails: the axial slices with the most error, cropped to the brain: {legend}. "
               "Click one for the full picture (ADC, Z_ADC and errors on every lesion slice, with the scores).</p>"
               if qc is not None else f"<p class=\"note\">{_text(qc_note or 'No QC pictures.')}</p>")
    return "\n".join([
        how, qc_text,
        "<div class=\"scroll\"><table id=\"case-table\"><thead>", "".join(top), "".join(second), "</thead><tbody>",
        *body, "</tbody></table></div>",
    ])


def _settings_table(settings: Mapping[str, object]) -> str:
    """Key-value table; a mapping value becomes a nested table."""
    rows = []
    for key, value in settings.items():
        shown = _settings_table(value) if isinstance(value, Mapping) else _text(_plain(value))
        rows.append(f"<tr><th scope=\"row\">{_text(str(key))}</th><td>{shown}</td></tr>")
    return "<table class=\"settings\"><tbody>" + "".join(rows) + "</tbody></table>"


def _plain(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " × ".join(_plain(v) for v in value) if all(isinstance(v, (int, float)) for v in value) else \
            ", ".join(_plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "–" if value is None else str(value)


def _groups(methods: Sequence[MethodRows]) -> list[str]:
    """"all", then the burden groups holding cases, in their order ("unknown" last when present)."""
    present = {row.burden_group for row in methods[0].rows} if methods else set()
    return [ALL_CASES] + [g for g in (*BURDEN_GROUPS, "unknown") if g in present]


def _has(rows: Iterable[CaseMetrics], metric: str) -> bool:
    return any(getattr(row, metric) is not None for row in rows)


def _check_same_cases(methods: Sequence[MethodRows]) -> None:
    if methods:
        reference = sorted(row.case_id for row in methods[0].rows)
        for method in methods[1:]:
            if sorted(row.case_id for row in method.rows) != reference:
                raise ValueError(f"method {method.name} scores other cases than {methods[0].name}")


def _shade(metric: str, row: CaseMetrics) -> float:
    """How bad a score is, 0 (perfect) to 1, for the cell's tint; 0 for what is not a score."""
    value = getattr(row, metric)
    if value is None or metric == CEILING_METRIC or not math.isfinite(value):
        return 0.0
    if metric == "masd_mm":
        return min(1.0, math.log1p(value) / math.log1p(MASD_SHADE_FULL_MM))
    return 1.0 - min(1.0, max(0.0, value))


def _number_cell(value: float | None, decimals: int, *, extra: str = "", shade: float = 0.0) -> str:
    if value is None or not math.isfinite(value):
        return f"<td data-sort=\"\">–{extra}</td>"
    red, green, blue = SHADE_COLOUR
    style = f" style=\"background:rgba({red},{green},{blue},{0.55 * shade:.2f})\"" if shade > 0 else ""
    return f"<td data-sort=\"{value!r}\"{style}>{value:.{decimals}f}{extra}</td>"


def _sortable(title: str, column: int, kind: str, worst: str, *, rowspan: int = 1, current: str | None = None) -> str:
    """A header cell whose button sorts the table by ``column``; first click: ``worst`` direction."""
    span = f" rowspan=\"{rowspan}\"" if rowspan > 1 else ""
    state = f" aria-sort=\"{current}\"" if current else ""
    return (f"<th{span}{state} data-col=\"{column}\" data-type=\"{kind}\" data-worst=\"{worst}\" scope=\"col\">"
            f"<button type=\"button\">{_text(title)}</button></th>")


def _sort_number(value: float | None, missing: float = -math.inf) -> float:
    return missing if value is None or math.isnan(value) else value


def _section(anchor: str, heading: str, body: str) -> str:
    return f"<section id=\"{anchor}\"><h2>{_text(heading)}</h2>\n{body}\n</section>"


def _navigation(sections: Sequence[Section]) -> str:
    links = [("summary", "Summary"), ("plots", "Distributions"), *((s.anchor, s.heading) for s in sections),
             ("cases", "Cases"), ("settings", "Settings and versions")]
    return "<nav>" + " · ".join(f"<a href=\"#{a}\">{_text(h)}</a>" for a, h in links) + "</nav>"


def _text(value: str) -> str:
    return html.escape(str(value), quote=True)


def _url(relative: str) -> str:
    return _text(quote(relative))


def _thumbnail_of(relative: str) -> str:
    return relative[: -len(".png")] + THUMBNAIL_SUFFIX


def _up_to_date(outputs: Sequence[Path], inputs: Sequence[Path]) -> bool:
    if not all(path.is_file() for path in outputs):
        return False
    return min(p.stat().st_mtime_ns for p in outputs) >= max(p.stat().st_mtime_ns for p in inputs)


def _empty_like(image: sitk.Image) -> sitk.Image:
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    return empty


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)}</title>
<style>
{STYLE}
</style>
</head>
<body>
{body}
<script>
{SCRIPT}
</script>
</body>
</html>
"""


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 0 1.5em 3em;
       max-width: 1800px; color: #1b1b1b; background: #fff; }
h1 { margin: .6em 0 .1em; font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta, .note { color: #555; } nav a { margin-right: .3em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: right; vertical-align: middle; }
th { background: #f3f3f3; } thead th { text-align: center; }
td.name, td.case, th[scope=row], th[scope=rowgroup] { text-align: left; }
td.best { font-weight: bold; } small { color: #555; white-space: nowrap; } td.case { white-space: nowrap; }
img.plot { max-width: 100%; height: auto; border: 1px solid #ddd; }
td.qc { padding: 2px; background: #000; } td.qc img { height: 80px; display: block; }
#case-table thead th { position: sticky; top: 0; z-index: 1; }
#case-table tbody tr:hover td { outline: 1px solid #888; }
th button { font: inherit; font-weight: bold; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort=ascending] button::after { content: " \\25B2"; } th[aria-sort=descending] button::after { content: " \\25BC"; }
.swatch { display: inline-block; width: .9em; height: .9em; margin: 0 .25em 0 .6em; vertical-align: -.1em;
          border: 1px solid #333; }
table.settings th { text-align: left; font-weight: normal; color: #444; } table.settings td { text-align: left; }
"""

SCRIPT = """
"use strict";
(function () {
  var table = document.getElementById("case-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.querySelectorAll("th[data-col]"));
  function sortBy(header, direction) {
    var column = Number(header.getAttribute("data-col"));
    var numeric = header.getAttribute("data-type") === "number";
    var sign = direction === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].getAttribute("data-sort");
      var y = b.cells[column].getAttribute("data-sort");
      if (!numeric) { return sign * x.localeCompare(y); }
      var u = parseFloat(x), v = parseFloat(y);
      if (isNaN(u) || isNaN(v)) { return Number(isNaN(u)) - Number(isNaN(v)); }
      return sign * (u - v);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction);
  }
  headers.forEach(function (header) {
    header.querySelector("button").addEventListener("click", function () {
      var current = header.getAttribute("aria-sort");
      var next = current ? (current === "ascending" ? "descending" : "ascending") : header.getAttribute("data-worst");
      sortBy(header, next);
    });
  });
}());
"""
