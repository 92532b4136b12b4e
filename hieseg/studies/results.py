"""A finished study's tables, plots and HTML report, from the scores and logs its runs left in its folder.

Every held-out case's scores are in its run's ``scores.csv`` (:class:`StudyRow`), every run's
epochs and seconds in its ``metrics.csv`` (:class:`RunCost`); :func:`write_report` gathers them
into ``results.csv``, ``runs.csv``, ``summary.csv``, ``results.md``, the plots and ``report/``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hieseg.config.settings import CONFIG_FILENAME, ExperimentConfig
from hieseg.data.burden import BURDEN_GROUPS
from hieseg.evaluation.lesions import LESION_HEADER, LESION_NOTE, lesion_cells
from hieseg.evaluation.metrics import (
    CEILING_METRIC,
    HIGHER_IS_BETTER,
    LESION_WISE,
    METRIC_TITLES,
    SUMMARY_METRICS,
    CaseMetrics,
    summarize,
)
from hieseg.io.images import write_atomic
from hieseg.io.layout import CaseFiles
from hieseg.io.tables import best_per_metric, markdown_table, read_csv, write_csv_atomic
from hieseg.model.network import build_network, parameter_count
from hieseg.reports import html
from hieseg.reports.plots import plot_metric_boxes, plot_validation_curves
from hieseg.studies.plan import (
    BUDGET_REASON,
    Method,
    Plan,
    RunKey,
    Study,
    method_label,
    study_settings,
)
from hieseg.training.logs import read_history

RESULTS_CSV = "results.csv"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
RESULTS_MD = "results.md"
BOXPLOTS_PNG = "boxplots.png"
CURVES_PNG = "validation_curves.png"
REPORT_DIR = "report"
GROUP_SLUGS = {"<1%": "lt1pct", "1-5%": "1to5pct", ">5%": "gt5pct"}
"""Burden groups as they appear in summary.csv column names."""
ROW_FIELDS = ("network", "loss", "fold", *(f.name for f in dataclasses.fields(CaseMetrics)), "inference_seconds")
TEXT_FIELDS = {"network", "loss", "case_id", "burden_group"}
OPTIONAL_FIELDS = {f.name for f in dataclasses.fields(CaseMetrics) if f.default is None} | {"inference_seconds"}
"""Per-case fields that may be blank (not computed) or absent (a scores.csv written before they existed)."""
RUN_FIELDS = ("network", "loss", "fold", "parameters", "epochs_run", "training_seconds")
COST_FIELDS = ("parameters", "epochs_run_mean", "training_seconds_mean", "training_seconds_std",
               "inference_seconds_mean", "inference_seconds_std")
"""What a (network, loss) costs, in summary.csv: per fold for training, per case for inference."""
COST_TITLES = ("parameters", "epochs run (mean)", "training s per fold", "inference s per case")
COST_NOTE = ("Parameters: trainable, of the network as configured. Epochs run: of the budget's epochs, fewer where "
             "early stopping ended a run. Training seconds: wall time of a fold's epochs, validation included, "
             "mean ± std over the folds. Inference seconds: wall time of one case's prediction (preprocessing, "
             "sliding window, post-processing, back to the native grid), mean ± std over the cases. Seconds "
             "compare only between runs on alike devices under alike load.")


@dataclass(frozen=True)
class StudyRow:
    """The held-out scores of one case under one (network, loss), and how long its prediction took."""

    network: str
    loss: str
    fold: int
    metrics: CaseMetrics
    inference_seconds: float | None = None
    """Wall time of the case's prediction: preprocessing, sliding window, post-processing, back to the native grid."""

    @property
    def method(self) -> Method:
        return (self.network, self.loss)

    def as_record(self) -> dict[str, object]:
        return {"network": self.network, "loss": self.loss, "fold": self.fold, **dataclasses.asdict(self.metrics),
                "inference_seconds": self.inference_seconds}

    @classmethod
    def from_record(cls, record: Mapping[str, str], network: str | None = None) -> StudyRow:
        """A row from its CSV record; ``network`` for a record written before rows named it."""
        values: dict[str, object] = {
            key: record[key] if key in TEXT_FIELDS else float(record[key])
            for key in ROW_FIELDS
            if key != "network" and (key not in OPTIONAL_FIELDS or record.get(key))
        }
        loss, fold = values.pop("loss"), int(values.pop("fold"))
        seconds = values.pop("inference_seconds", None)
        return cls(network=record.get("network") or str(network), loss=str(loss), fold=fold,
                   metrics=CaseMetrics(**values), inference_seconds=seconds)


@dataclass(frozen=True)
class RunCost:
    """What one run cost: its network's trainable parameters, the epochs it ran and their seconds.

    The seconds are the sum of the ``seconds`` column of the run's metrics.csv: each epoch's
    wall time, its validation and checkpoint included, over the epochs it kept (those of an
    interrupted epoch are lost with it).
    """

    run: RunKey
    parameters: int
    epochs_run: int
    training_seconds: float

    def as_record(self) -> dict[str, object]:
        return {"network": self.run.network, "loss": self.run.loss, "fold": self.run.fold,
                "parameters": self.parameters, "epochs_run": self.epochs_run,
                "training_seconds": self.training_seconds}


def write_report(study: Study, plan: Plan) -> list[StudyRow]:
    """results.csv, runs.csv, summary.csv, results.md, the plots and report/, from every run's files."""
    rows = [row for run in plan.runs for row in read_rows(study.scores_path(run), run.network)]
    costs = run_costs(study, plan)
    curves = {
        method_label(method): mean_curve([validation_curve(study.metrics_path(RunKey(*method, k), ids))
                                          for k, ids in enumerate(plan.folds)])
        for method in study.methods
    }
    settings = describe(study, plan)
    write_results(rows, costs, curves, study.out, settings)
    write_html(study, rows, costs, curves, plan.files, settings)
    return rows


def run_costs(study: Study, plan: Plan) -> list[RunCost]:
    """Each run's parameters (its network built from the run's configuration), epochs run and training seconds."""
    parameters = {network: parameter_count(build_network(study.run_config(RunKey(network, study.losses[0], 0))))
                  for network in study.networks}
    costs = []
    for run in plan.runs:
        history = read_history(study.metrics_path(run, plan.folds[run.fold]))
        costs.append(RunCost(run, parameters[run.network], epochs_run=len(history),
                             training_seconds=float(sum(row["seconds"] for row in history))))
    return costs


def validation_curve(path: Path) -> dict[int, float]:
    """Validation Dice by epoch from a run's metrics.csv (epochs without validation left out)."""
    rows = read_history(path)
    return {int(row["epoch"]): row["val_dice"] for row in rows if not math.isnan(row["val_dice"])}


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean over folds at each epoch, over the folds that validated at that epoch (early stops differ)."""
    epochs = sorted({epoch for curve in curves for epoch in curve})
    return {epoch: float(np.mean([c[epoch] for c in curves if epoch in c])) for epoch in epochs}


def describe(study: Study, plan: Plan) -> dict[str, object]:
    """The settings a reader needs to interpret the tables, recorded in results.md and the HTML report."""
    train = study.config.train
    return {
        "cases": len(plan.files),
        "folds": train.folds,
        "networks": ", ".join(study.networks),
        "losses": ", ".join(study.losses),
        "seed": train.seed,
        "budget": f"at most {train.epochs} epochs x "
                  f"{f'{train.steps_per_epoch} steps' if train.steps_per_epoch else 'one pass over the training cases'}"
                  f" per run, {train.batch_size} patch(es) a step, counted in {BUDGET_REASON}",
        "target_spacing_mm": network_grids(study, plan),
        "nsd_tolerance_mm": study.nsd_tolerance_mm,
    }


def network_grids(study: Study, plan: Plan) -> str:
    """The network grid(s) the runs trained on: the configured one, or each run's data-derived one
    (``preprocess.target_spacing`` unset), as its saved config.json resolved it."""
    configured = study.config.preprocess.target_spacing
    if configured is not None:
        return " x ".join(f"{value:g}" for value in configured)
    grids = {
        tuple(ExperimentConfig.load(study.run_dir(run) / CONFIG_FILENAME).preprocess.target_spacing or ())
        for run in plan.runs
    }
    return "; ".join(" x ".join(f"{value:g}" for value in grid) for grid in sorted(grids)) + " (from the data)"


def write_results(
    rows: Sequence[StudyRow],
    costs: Sequence[RunCost],
    curves: Mapping[str, Mapping[int, float]],
    out: Path,
    settings: Mapping[str, object],
) -> None:
    """results.csv, runs.csv, summary.csv, results.md, boxplots.png and validation_curves.png, each atomically."""
    summaries = summarize_by_method(rows)
    method_costs = cost_statistics(costs, rows)
    write_rows(out / RESULTS_CSV, rows)
    write_csv_atomic(out / RUNS_CSV, RUN_FIELDS, [cost.as_record() for cost in costs])
    records = summary_records(summaries, method_costs)
    write_csv_atomic(out / SUMMARY_CSV, list(records[0]), records)
    markdown = render_markdown(summaries, method_costs, settings)
    write_atomic(out / RESULTS_MD, lambda temporary: temporary.write_text(markdown))
    plot_metric_boxes({method_label(method): [row.metrics for row in rows if row.method == method]
                       for method in summaries}, out / BOXPLOTS_PNG)
    plot_validation_curves(curves, out / CURVES_PNG)


def write_html(
    study: Study,
    rows: Sequence[StudyRow],
    costs: Sequence[RunCost],
    curves: Mapping[str, Mapping[int, float]],
    files: Sequence[CaseFiles],
    settings: Mapping[str, object],
) -> None:
    """report/: the study as an HTML report, with each (network, loss)'s cost and QC picture of every case, and
    the shared configuration."""
    methods = [html.MethodRows(method_label(method), [row.metrics for row in rows if row.method == method],
                                      folder="/".join(method))
               for method in study.methods]
    images = {f.case_id: html.QcImages(f.adc, f.zadc, f.label) for f in files}
    predictions = {method_label(method): {f.case_id: study.prediction_path(method, f.case_id) for f in files}
                   for method in study.methods}
    report_dir = study.out / REPORT_DIR
    qc = html.render_qc(report_dir, methods, images, predictions, progress=study.progress)
    method_costs = cost_statistics(costs, rows)
    cost_section = html.table_section(
        "cost", "Cost", ["network / loss", *COST_TITLES],
        [[method_label(method), *_cost_cells(method_costs[method])] for method in study.methods],
        note=COST_NOTE,
    )
    html.write_study_report(report_dir, methods, curves,
                                   {**settings, "configuration": study_settings(study)["config"]}, qc=qc,
                                   sections=[cost_section])


def summarize_by_method(rows: Sequence[StudyRow]) -> dict[Method, dict]:
    """:func:`hieseg.evaluation.metrics.summarize` of each (network, loss)'s rows, in first-seen order."""
    methods = list(dict.fromkeys(row.method for row in rows))
    return {method: summarize([row.metrics for row in rows if row.method == method]) for method in methods}


def cost_statistics(costs: Sequence[RunCost], rows: Sequence[StudyRow]) -> dict[Method, dict[str, object]]:
    """Per (network, loss) of ``rows``: parameters, mean epochs run and mean ± std training seconds over its
    folds, mean ± std inference seconds over its cases; blank where nothing was measured."""
    found: dict[Method, dict[str, object]] = {}
    for method in dict.fromkeys(row.method for row in rows):
        runs = [cost for cost in costs if cost.run.method == method]
        inference = [row.inference_seconds for row in rows
                     if row.method == method and row.inference_seconds is not None]
        training_seconds = [cost.training_seconds for cost in runs]
        found[method] = {
            "parameters": runs[0].parameters if runs else "",
            "epochs_run_mean": float(np.mean([cost.epochs_run for cost in runs])) if runs else "",
            **_mean_std("training_seconds", training_seconds),
            **_mean_std("inference_seconds", inference),
        }
    return found


def _mean_std(name: str, values: Sequence[float]) -> dict[str, object]:
    if not values:
        return {f"{name}_mean": "", f"{name}_std": ""}
    return {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}


def _cost_cells(cost: Mapping[str, object]) -> list[str]:
    """A (network, loss)'s cost as table cells, in the order of :data:`COST_TITLES`."""
    def mean_std(name: str, decimals: int) -> str:
        mean, std = cost[f"{name}_mean"], cost[f"{name}_std"]
        return "–" if mean == "" else f"{mean:.{decimals}f} ± {std:.{decimals}f}"

    parameters, epochs = cost["parameters"], cost["epochs_run_mean"]
    return [
        "–" if parameters == "" else f"{parameters:,}",
        "–" if epochs == "" else f"{epochs:g}",
        mean_std("training_seconds", 1),
        mean_std("inference_seconds", 3),
    ]


def summary_records(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]]
) -> list[dict[str, object]]:
    """One flat summary.csv row per (network, loss): its cost, then n, mean and std of each metric, overall then
    per burden group.

    The ceiling's columns are there when some method has ceilings, blank for one without them.
    """
    metrics = reported_metrics(summary["overall"] for summary in summaries.values())
    records = []
    for (network, loss), summary in summaries.items():
        cost = costs.get((network, loss), {})
        record: dict[str, object] = {
            "network": network,
            "loss": loss,
            **{field: cost.get(field, "") for field in COST_FIELDS},
            **_flat_statistics("", summary["overall"], metrics),
            "n_one_empty": summary["n_one_empty"],
        }
        for group in BURDEN_GROUPS:
            record.update(_flat_statistics(f"{GROUP_SLUGS[group]}_", summary["by_burden"][group], metrics))
        records.append(record)
    return records


def reported_metrics(statistics: Iterable[Mapping]) -> tuple[str, ...]:
    """SUMMARY_METRICS, plus the resampling ceiling when any of these statistics has it."""
    has_ceiling = any(CEILING_METRIC in entry for entry in statistics)
    return SUMMARY_METRICS + ((CEILING_METRIC,) if has_ceiling else ())


def _flat_statistics(prefix: str, statistics: Mapping, metrics: Sequence[str]) -> dict[str, object]:
    record: dict[str, object] = {f"{prefix}n": statistics["n"]}
    for metric in metrics:
        values = statistics.get(metric)
        record[f"{prefix}{metric}_mean"] = "" if values is None else values["mean"]
        record[f"{prefix}{metric}_std"] = "" if values is None else values["std"]
    return record


def render_markdown(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]], settings: Mapping[str, object]
) -> str:
    """results.md: one table overall, the cost of each (network, loss), and one table per burden group, the best
    per metric in bold."""
    lines = [
        "# Network and loss comparison",
        "",
        "Every network and loss trained with the same folds, seed and budget, and scored on its held-out fold "
        "in the native grid. Settings:",
        "",
        *(f"- {key} = {value}" for key, value in settings.items()),
        "",
        "Mean ± std (population) over the held-out cases; **bold**: the best network and loss per column "
        "(highest Dice and NSD, lowest MASD).",
        "",
        "## All cases",
        "",
        *_markdown_table({method: summary["overall"] for method, summary in summaries.items()}),
        "",
        "Cases with exactly one empty mask, scored Dice 0, NSD 0 and MASD = the image diagonal: "
        + ", ".join(f"{method_label(method)} {summary['n_one_empty']}" for method, summary in summaries.items())
        + ".",
    ]
    if CEILING_METRIC in reported_metrics(summary["overall"] for summary in summaries.values()):
        lines += [
            "",
            "ceiling Dice: each case's truth after a round trip through the study's grid (resampled there and "
            "back as the predictor does), the best Dice any model could reach; it depends on neither network nor "
            "loss.",
        ]
    if any(LESION_WISE in summary["overall"] for summary in summaries.values()):
        lines += ["", "## Lesion-wise, all cases", "",
                  *markdown_table(["network", "loss", *LESION_HEADER],
                                  [[*method, *lesion_cells(summary["overall"].get(LESION_WISE))]
                                   for method, summary in summaries.items()]),
                  "", LESION_NOTE]
    lines += ["", "## Cost", "", *_markdown_cost_table(summaries, costs), "", COST_NOTE]
    for group in BURDEN_GROUPS:
        lines += [
            "",
            f"## Lesion burden {group} of brain volume",
            "",
            *_markdown_table({method: summary["by_burden"][group] for method, summary in summaries.items()}),
        ]
    return "\n".join(lines) + "\n"


def _markdown_table(statistics_by_method: Mapping[Method, Mapping]) -> list[str]:
    best = best_per_metric(statistics_by_method, HIGHER_IS_BETTER)
    metrics = reported_metrics(statistics_by_method.values())
    header = ["network", "loss", "n", *(METRIC_TITLES[metric] for metric in metrics)]
    rows = []
    for method, statistics in statistics_by_method.items():
        cells = [*method, str(statistics["n"])]
        for metric in metrics:
            values = statistics.get(metric)
            cell = "–" if values is None else f"{values['mean']:.3f} ± {values['std']:.3f}"
            cells.append(f"**{cell}**" if method in best.get(metric, set()) else cell)
        rows.append(cells)
    return markdown_table(header, rows)


def _markdown_cost_table(
    summaries: Mapping[Method, Mapping], costs: Mapping[Method, Mapping[str, object]]
) -> list[str]:
    blank = {field: "" for field in COST_FIELDS}
    return markdown_table(["network", "loss", *COST_TITLES],
                          [[*method, *_cost_cells(costs.get(method, blank))] for method in summaries])


def write_rows(path: Path, rows: Sequence[StudyRow]) -> None:
    """Per-case rows as CSV, written atomically so a crash never leaves a half-written 'done' marker."""
    write_csv_atomic(path, ROW_FIELDS, [row.as_record() for row in rows])


def read_rows(path: Path, network: str | None = None) -> list[StudyRow]:
    """The rows of a scores.csv or results.csv; ``network`` for a scores.csv written before rows named it."""
    return [StudyRow.from_record(record, network) for record in read_csv(path)]
