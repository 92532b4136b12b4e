"""The HTML reports of ``evaluate --html`` and ``compare --html``: which methods, scores and QC pictures they show.

:mod:`hieseg.reports.html` draws a page from methods and their per-case scores; this module
gathers those for each command: the prediction folders an evaluation names (and where their
QC pictures' images are), or the masks a comparison wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hieseg.errors import ConfigError
from hieseg.evaluation.compare import Comparison, mask_path
from hieseg.evaluation.folders import find_cases
from hieseg.evaluation.metrics import CaseMetrics
from hieseg.io.layout import ADC_DIR, adc_path, zadc_path
from hieseg.reports.html import MethodRows, QcImages, render_qc, write_report


def method_folders(folders: Sequence[Path]) -> dict[str, Path]:
    """Prediction folders by the name the HTML report gives them: their folder names, which must differ."""
    named: dict[str, Path] = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in named:
            raise ConfigError(f"two prediction folders are named {name!r} ({named[name]} and {folder}); "
                              "rename one, the report names methods by folder")
        named[name] = Path(folder)
    return named


def write_evaluation_report(
    html_dir: Path,
    folders: Mapping[str, Path],
    rows: Mapping[str, list[CaseMetrics]],
    truth_dir: Path,
    brain_dir: Path | None,
    settings: Mapping[str, object],
    allow_missing: bool = False,
) -> Path:
    """report.html of these methods' scores, with QC pictures when the truth or brain folder is a release root."""
    methods = [MethodRows(name, rows[name], str(folder)) for name, folder in folders.items()]
    root = next((Path(d) for d in (truth_dir, brain_dir) if d is not None and (Path(d) / ADC_DIR).is_dir()), None)
    sources = {name: find_cases(Path(folder), Path(truth_dir), brain_dir, allow_missing)
               for name, folder in folders.items()}
    qc, note = None, ""
    if root is None:
        note = "No QC pictures: they need the ADC and Z_ADC images, found when --truth or --brain is a release root."
    else:
        images = {case.case_id: QcImages(adc_path(root, case.case_id), zadc_path(root, case.case_id), case.truth)
                  for case in next(iter(sources.values()))}
        missing = [str(files.zadc) for files in images.values() if not files.zadc.is_file()]
        if missing:
            note = f"No QC pictures: {len(missing)} Z_ADC image(s) missing, e.g. {missing[0]}."
        else:
            predictions = {name: {case.case_id: case.pred for case in cases} for name, cases in sources.items()}
            qc = render_qc(Path(html_dir), methods, images, predictions)
    return write_report(Path(html_dir), title="Evaluation", methods=methods, settings=settings, qc=qc, qc_note=note)


def write_comparison_report(html_dir: Path, comparison: Comparison, out: Path, progress: bool = True) -> Path:
    """report.html of a comparison written to ``out``: the methods side by side, with every method's QC pictures."""
    methods = [MethodRows(method.name, comparison.rows[method.name], method.description)
               for method in comparison.methods]
    images = {f.case_id: QcImages(f.adc, f.zadc, f.label) for f in comparison.files}
    predictions = {method.name: {f.case_id: mask_path(out, method, f.case_id) for f in comparison.files}
                   for method in comparison.methods}
    qc = render_qc(Path(html_dir), methods, images, predictions, progress=progress)
    return write_report(Path(html_dir), title="Models beside the baselines", methods=methods,
                        settings=comparison.summary["settings"], qc=qc)
