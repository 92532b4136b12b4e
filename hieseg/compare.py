"""Score trained models beside the Z_ADC baselines on the same cases, in one run.

Usage::

    python -m hieseg.compare --data <release root> --model <weights dir> [--model <dir2> ...]
                             [--name NAME ...] --out <dir> [--device auto] [--tta | --no-tta]
                             [--nsd-tolerance 2.0] [--html <dir>] [--no-progress] [--verbose]

A model's score means little alone: ``Z_ADC < -2`` (:mod:`hieseg.baselines`) is what the
map gives for free, and the resampling ceiling (:mod:`hieseg.ceiling`) is the best any
model predicting on that model's grid could reach. This command puts the three side by side,
computed from the same cases in the same run:

* every weights folder is loaded once and predicts every case on the native grid, as the
  container does (``--tta`` forces flip test-time augmentation on, ``--no-tta`` off;
  default as saved); ``--name`` names the models in order (default: the folders' names);
* both baselines are computed from each case's Z_ADC;
* every method's masks are scored by :func:`hieseg.evaluate.evaluate_folders`, exactly as
  ``python -m hieseg.evaluate`` would (brain = ADC > 0, burden groups <1 %, 1-5 %, >5 %,
  an empty prediction of a lesioned case scored MASD = the image diagonal), models with the
  ceiling of their own target spacing;
* MASD is also averaged the official script's way, over the cases where both masks are
  non-empty (:func:`hieseg.metrics.official_mean_masd`), since that is what the leaderboard
  reports.

Layout of ``--out``::

    predictions/<method>/<case>.mha    masks on the native grid (models and baselines)
    comparison.csv                     one row per (method, case): the challenge metrics (+ ceiling)
    comparison.json                    settings and, per method, statistics overall and per burden group
    comparison.md                      one table per burden group: methods as rows

``--html DIR`` also writes the comparison as an HTML report that opens offline
(:mod:`hieseg.html_report`): the methods side by side in the tables and box plots, and one
row per case, worst first, with every method's QC picture of it.

The overall table is printed too. Bad input (a missing folder, no cases, a bad weights
folder, clashing names) is one line on stderr and exit status 2, before any prediction.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from hieseg.baselines import BASELINES, MASK_SUFFIX, baseline_mask_image
from hieseg.cli_common import configure_logging, run_reporting_errors
from hieseg.errors import ConfigError
from hieseg.evaluate import METRIC_TITLES, evaluate_folders
from hieseg.html_report import REPORT_HTML, CaseImages, MethodRows, render_qc, write_report
from hieseg.image_io import require_writable, write_atomic, write_image_atomic
from hieseg.layout import discover_cases, load_case
from hieseg.metrics import (
    CEILING_METRIC,
    DEFAULT_NSD_TOLERANCE_MM,
    SUMMARY_METRICS,
    CaseMetrics,
    official_mean_masd,
    summarize,
)
from hieseg.predictor import Predictor, load_bundle, select_device

PREDICTIONS_DIR = "predictions"
COMPARISON_CSV = "comparison.csv"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
OFFICIAL_MASD = "masd_official_mm"
"""Key, in each group's statistics, of the MASD averaged the official way."""
ALL_CASES = "all"
MODEL, BASELINE = "model", "baseline"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Method names become folder names: letters, digits, '.', '_' and '-', not starting with a dot."""
CSV_FIELDS = ("method", *(field.name for field in dataclasses.fields(CaseMetrics)))


@dataclass(frozen=True)
class Method:
    """One compared method: a model (with the grid it predicts on) or a baseline."""

    name: str
    kind: str
    description: str
    target_spacing: tuple[float, float, float] | None = None


def method_names(model_dirs: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """The models' names: ``names`` in order, or the folders' names; unique, folder-safe, no baseline's name."""
    if names and len(names) != len(model_dirs):
        raise ConfigError(
            f"--name given {len(names)} time(s) for {len(model_dirs)} --model folder(s); give one per model"
        )
    chosen = list(names) if names else [Path(d).resolve().name for d in model_dirs]
    for name in chosen:
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"model name {name!r} cannot name a folder; use letters, digits, '.', '_' or '-' (--name)"
            )
        if name in BASELINES:
            raise ConfigError(f"model name {name!r} is a baseline's name; choose another with --name")
    duplicates = sorted({name for name in chosen if chosen.count(name) > 1})
    if duplicates:
        raise ConfigError(f"two models are named {', '.join(duplicates)}; name them apart with --name")
    return chosen


def compare(
    data: Path,
    model_dirs: Sequence[Path],
    out: Path,
    *,
    names: Sequence[str] | None = None,
    device: str = "auto",
    tta: bool | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    progress: bool = True,
    html: Path | None = None,
) -> dict:
    """Predict, compute the baselines, score everything and write the three reports; return the summary.

    With ``html``, also write the HTML report there, QC pictures included.
    """
    data, out = Path(data), Path(out)
    if not model_dirs:
        raise ConfigError("give at least one --model weights folder")
    if html is not None:
        require_writable(Path(html), folder=True)
    model_names = method_names(model_dirs, names)
    files = discover_cases(data)
    torch_device = select_device(device)
    overrides = {} if tta is None else {"tta_flips": tta}
    predictors = {}
    methods = []
    for name, model_dir in zip(model_names, model_dirs):
        bundle = load_bundle(model_dir, torch_device)
        predictors[name] = Predictor.from_bundle(bundle, torch_device, **overrides)
        spacing = tuple(bundle.config.preprocess.target_spacing)
        methods.append(Method(name, MODEL, _describe_model(model_dir, predictors[name]), spacing))
    methods += [Method(name, BASELINE, baseline.description) for name, baseline in BASELINES.items()]

    for files_of_case in tqdm(files, desc="predicting", unit="case", disable=None if progress else True):
        case = load_case(files_of_case)
        masks = {name: predictor.mask_image(case) for name, predictor in predictors.items()}
        masks.update({name: baseline_mask_image(name, case.zadc) for name in BASELINES})
        for name, mask in masks.items():
            write_image_atomic(mask, out / PREDICTIONS_DIR / name / f"{files_of_case.case_id}{MASK_SUFFIX}")

    rows = {
        method.name: evaluate_folders(
            out / PREDICTIONS_DIR / method.name,
            data,
            nsd_tolerance_mm=nsd_tolerance_mm,
            ceiling_spacing=method.target_spacing,
            progress=progress,
        )
        for method in methods
    }
    settings = {
        "data": str(data),
        "cases": len(files),
        "device": str(torch_device),
        "tta": "as saved" if tta is None else tta,
        "nsd_tolerance_mm": nsd_tolerance_mm,
    }
    summary = summarize_methods(methods, rows, settings)
    write_reports(rows, summary, out)
    if html is not None:
        method_rows = [MethodRows(method.name, rows[method.name], method.description) for method in methods]
        images = {f.case_id: CaseImages(f.adc, f.zadc, f.label) for f in files}
        predictions = {method.name: {f.case_id: out / PREDICTIONS_DIR / method.name / f"{f.case_id}{MASK_SUFFIX}"
                                     for f in files} for method in methods}
        qc = render_qc(Path(html), method_rows, images, predictions, progress=progress)
        write_report(Path(html), title="Models beside the baselines", methods=method_rows, settings=settings, qc=qc)
    return summary


def summarize_methods(
    methods: Sequence[Method], rows: Mapping[str, list[CaseMetrics]], settings: Mapping[str, object]
) -> dict:
    """comparison.json's content: the settings, then per method what it is and its statistics.

    Each method's statistics are :func:`hieseg.metrics.summarize`'s (the ceiling included for
    models), each group's with the official MASD (mean over both-non-empty cases, and their count).
    """
    summaries = {}
    for method in methods:
        method_rows = rows[method.name]
        summary = summarize(method_rows)
        summary["overall"][OFFICIAL_MASD] = official_mean_masd(method_rows)
        for group, statistics in summary["by_burden"].items():
            statistics[OFFICIAL_MASD] = official_mean_masd([r for r in method_rows if r.burden_group == group])
        summaries[method.name] = {
            "kind": method.kind,
            "description": method.description,
            "target_spacing_mm": None if method.target_spacing is None else list(method.target_spacing),
            **summary,
        }
    return {"settings": dict(settings), "methods": summaries}


def write_reports(rows: Mapping[str, list[CaseMetrics]], summary: Mapping, out: Path) -> None:
    """comparison.csv (one row per method and case), comparison.json and comparison.md, each written atomically."""

    def write_csv(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for method, method_rows in rows.items():
                writer.writerows({"method": method, **dataclasses.asdict(row)} for row in method_rows)

    write_atomic(out / COMPARISON_CSV, write_csv)
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    write_atomic(out / COMPARISON_JSON, lambda temporary: temporary.write_text(text))
    markdown = render_markdown(summary)
    write_atomic(out / COMPARISON_MD, lambda temporary: temporary.write_text(markdown))


def render_markdown(summary: Mapping) -> str:
    """comparison.md: the methods, then one table per burden group that has cases (all cases first)."""
    settings = summary["settings"]
    methods = summary["methods"]
    lines = [
        "# Models beside the baselines",
        "",
        "Settings: " + ", ".join(f"{key} = {value}" for key, value in settings.items()) + ".",
        "",
    ]
    for name, method in methods.items():
        lines.append(f"- `{name}` ({method['kind']}): {method['description']}")
    for group in present_groups(summary):
        title = "All cases" if group == ALL_CASES else f"Lesion burden {group} of brain volume"
        lines += ["", f"## {title}", "", *comparison_table(summary, group)]
    lines += [
        "",
        "Mean ± std (population) over the cases, scored on the native grid.",
        "Cases with exactly one empty mask score Dice 0, NSD 0 and MASD = the image diagonal, so an empty "
        "prediction is never rewarded; there were "
        + ", ".join(f"{name} {method['n_one_empty']}" for name, method in methods.items()) + ".",
        "MASD official: the mean over the (k) cases whose masks are both non-empty, as the official script "
        "averages (its MASD is NaN otherwise, and skipped).",
        "ceiling Dice: each case's truth after a round trip through the model's grid, the best Dice any model "
        "predicting on that grid can reach.",
    ]
    return "\n".join(lines) + "\n"


def present_groups(summary: Mapping) -> list[str]:
    """"all", then the burden groups that hold cases (every method scores the same cases)."""
    first = next(iter(summary["methods"].values()))
    return [ALL_CASES] + [group for group, statistics in first["by_burden"].items() if statistics["n"]]


def comparison_table(summary: Mapping, group: str = ALL_CASES) -> list[str]:
    """Markdown table lines of one group ("all" or a burden group): one row per method."""
    header = ["method", "n", *(METRIC_TITLES[m] for m in SUMMARY_METRICS), "MASD official (mm) (k)",
              METRIC_TITLES[CEILING_METRIC]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, method in summary["methods"].items():
        statistics = method["overall"] if group == ALL_CASES else method["by_burden"][group]
        cells = [name, str(statistics["n"])]
        cells += [_mean_std(statistics.get(metric)) for metric in SUMMARY_METRICS]
        official = statistics[OFFICIAL_MASD]
        cells.append("–" if official["mean"] is None else f"{official['mean']:.3f} ({official['n']})")
        cells.append(_mean_std(statistics.get(CEILING_METRIC)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mean_std(values: Mapping | None) -> str:
    return "–" if values is None else f"{values['mean']:.3f} ± {values['std']:.3f}"


def _describe_model(model_dir: Path, predictor: Predictor) -> str:
    config = predictor.config
    spacing = " × ".join(f"{s:g}" for s in config.preprocess.target_spacing)
    return (
        f"{model_dir}: {len(predictor.networks)} network(s), loss {config.loss.name}, grid {spacing} mm, "
        f"threshold {predictor.settings.threshold:g}, flip TTA {'on' if predictor.settings.tta_flips else 'off'}"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hieseg.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="release root with 1ADC_ss/, 2Z_ADC/ and 3LABEL/")
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="weights folder (config.json + *.pt); repeat to compare several")
    parser.add_argument("--name", action="append", help="name of each --model, in order (default: folder names)")
    parser.add_argument("--out", type=Path, required=True, help="folder for predictions/ and the comparison reports")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda or cpu")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation for every model (default: as saved)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, help="NSD tolerance in mm")
    parser.add_argument("--html", type=Path, help="also write an HTML report (report.html and its pictures) here")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        summary = compare(
            args.data,
            args.model,
            args.out,
            names=args.name,
            device=args.device,
            tta=args.tta,
            nsd_tolerance_mm=args.nsd_tolerance,
            progress=not args.no_progress,
            html=args.html,
        )
        print("\n".join(comparison_table(summary)))
        print(f"reports in {args.out}: {COMPARISON_MD}, {COMPARISON_JSON}, {COMPARISON_CSV}")
        if args.html is not None:
            print(f"HTML report: {args.html / REPORT_HTML}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
