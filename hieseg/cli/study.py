"""The network and loss comparison (arXiv 2502.09148's losses, MONAI's networks) as one reproducible command.

Usage::

    python -m hieseg.study --data <root> --losses all --folds 5 --out <dir>
                           [--networks unet,dynunet,segresnet,swinunetr]
                           [--config base.json] [--set section.key=value ...] [--epochs N] [--seed S]
                           [--device auto] [--devices cuda:0,cuda:1] [--workers N] [--shard K/N]
                           [--reclaim] [--report] [--nsd-tolerance 2.0] [--no-progress]

Every network and loss is trained once per fold with a configuration that differs only in
``network.name``, ``loss.name`` and ``train.fold``: the same seed, the same budget and the same
folds. The folds are computed once by :func:`hieseg.data.splits.stratified_folds` over the lesion
burdens and each run is given its fold's case ids explicitly, so the case it is scored on is
exactly the case it never trained on, whatever its network. The best weights by validation
Dice then predict the held-out fold on the native grid, and the masks are scored with the
challenge metrics in mm (:func:`hieseg.evaluation.metrics.score_case`, brain = ADC > 0). Each case also gets
its resampling ceiling on the study's grid (:mod:`hieseg.evaluation.ceiling`), the best Dice any model could
reach there, reported beside the scores. Nothing is tuned on the held-out folds: the shared
configuration's post-processing is used as it is.

The budget is counted in optimiser steps, not seconds: every run gets at most ``train.epochs``
x ``train.steps_per_epoch`` steps of ``train.batch_size`` patches (one pass over the fold's
training cases per epoch when ``steps_per_epoch`` is 0), the same for every network. A step
count reproduces on any machine and gives each network the same updates on the same patches;
seconds depend on the device, its load and the other jobs on it, so a time budget would make the
comparison depend on when and where each run happened. Early stopping (``train.patience``) may
end a run sooner, the same rule for all; the epochs each run took are reported. What each
network costs is reported beside its scores instead: its parameters, the training seconds per
fold and the prediction seconds per case (wall time on the run's device: comparable between
runs on alike devices under alike load).

Before anything is trained, every network is checked against the study's ``train.patch_size``
and ``inference.roi_size`` (SwinUNETR needs multiples of 32 on every axis, the U-Nets multiples
of their strides' product), so a study whose last network could not run fails at once.

Layout of ``--out``::

    study.json                        shared configuration, networks, budget and NSD tolerance; a rerun must match
    splits.json                       seed, folds (case ids) and the burdens they were stratified on
    models/<network>/<loss>/fold<k>/  one weights folder per run: config.json, model.pt, runs/model/
    models/<network>/<loss>/fold<k>/scores.csv  that run's held-out scores; it marks the run as done
    predictions/<network>/<loss>/<case>.mha     held-out masks on the native grid
    results.csv                       per case: network, loss, fold, the challenge metrics, inference seconds
    runs.csv                          per run: parameters, epochs run, training seconds
    summary.csv, results.md           per (network, loss): mean ± std overall and per burden group, and its cost
    boxplots.png, validation_curves.png   MASD on a log axis, so a failed model does not flatten the rest
    report/report.html                the same as an HTML report that opens offline, with every (network, loss)'s
                                      QC picture of every case (:mod:`hieseg.reports.html`)
    claims/<network>.<loss>.fold<k>.<n>.json   who trains (or trained) a run: host, pid, time (:mod:`hieseg.runtime.claims`)
    claims/report.<n>.json            who writes (or wrote) the tables and plots

Rerunning the same command resumes: a run with a ``scores.csv`` is not repeated, an
interrupted training continues from its checkpoint, and the data must still hold the
cases the folds were made from. Every other setting must match ``study.json`` (compared after
bringing both configurations to the current config format, so a study recorded by an older
version is refused only for a real difference, naming the keys), except the lists of losses
and networks, which may grow: a rerun with one more loss or network trains only its runs, on
the same folds and budget, and ``study.json`` lists every network the study has run. A folder
laid out by the version before networks (``models/<loss>/fold<k>``) is refused, saying how to
move its runs, rather than retrained or mixed.

Scale-out. The (network, loss, fold) runs are independent, so several processes may work on one
study folder at once, on one machine or on several that share it:

* ``--devices cuda:0,cuda:1`` trains one run per listed device at a time, in one spawned worker
  process per device (:mod:`hieseg.runtime.pool`; ``--workers N`` starts N per device, or N on
  ``--device``, e.g. CPU workers), each taking the next run when it is done with one;
* ``--shard K/N`` (0 <= K < N) takes runs K, K+N, K+2N, ... of the study's list (networks in the
  order given, losses in the order given within each, folds within each), for the tasks of a
  scheduler's job array that all run the same command on the same ``--out``.

Before it trains a run a process claims it atomically (:func:`hieseg.runtime.claims.acquire`), so a run
is never trained twice, whatever the processes, shards and machines that start together. A run
claimed by a live process is left to it. A claim ends when its run is done or stopped (Ctrl-C,
SIGTERM as a scheduler sends at its time limit, an error); a claim whose process was killed
outright is taken over by the next process on the same host, and one from another host only
with ``--reclaim``, since no process here can see whether that one still runs.

The tables and plots cover every run, so they are made when every run is finished: by the
process that finds them all finished after its own runs (the last to finish), or by
``--report``, which writes them from a finished study folder without training anything and
refuses, naming the runs, while some are not finished.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hieseg.cli.common import (
    CommandParser,
    add_output_flags,
    parse_shard,
    run_reporting_errors,
)
from hieseg.config.overrides import build_config, parse_overrides
from hieseg.config.settings import LOSS_NAMES, NETWORK_NAMES, ExperimentConfig
from hieseg.errors import ConfigError
from hieseg.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM
from hieseg.runtime.devices import worker_devices
from hieseg.runtime.logs import configure_logging
from hieseg.studies.plan import ALL_LOSSES, BUDGET_REASON, PER_RUN_KEYS, Study
from hieseg.studies.results import StudyRow
from hieseg.studies.runner import (
    FINISHED,
    HELD,
    TRAINED,
    StudyOutcome,
    report_study,
    run_study,
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(description=__doc__.split("\n\n")[0],
        epilog="Every run gets the same budget, counted in " + BUDGET_REASON + ". Rerun the same command to resume; "
               "more --losses or --networks extend a study whose other settings are unchanged.",
    )
    parser.add_argument("--data", type=Path, required=True, help="release root holding 1ADC_ss/, 2Z_ADC/, 3LABEL/")
    parser.add_argument("--out", type=Path, required=True, help="study folder (rerun the same command to resume)")
    parser.add_argument("--losses", default=ALL_LOSSES,
                        help=f"{ALL_LOSSES!r} (default) or a comma list of: {', '.join(LOSS_NAMES)}")
    parser.add_argument("--networks",
                        help=f"comma list of: {', '.join(NETWORK_NAMES)} (default: the config's network.name); "
                             "each is trained with every loss on the same folds and step budget, and must accept "
                             "train.patch_size and inference.roi_size (swinunetr: multiples of 32)")
    parser.add_argument("--folds", type=int, help="number of stratified folds (default: train.folds, 5)")
    parser.add_argument("--config", type=Path, help="start from this config.json instead of the defaults")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs of every run")
    parser.add_argument("--seed", type=int, help="seed of the folds, sampling and initialisation")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value but network.name, loss.name and train.fold, "
             "e.g. --set train.patch_size=[64,64,32]",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:N or cpu")
    parser.add_argument("--devices", help="train on these devices in parallel, one worker process each, "
                                          "e.g. cuda:0,cuda:1 (overrides --device)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes per device (default 1), e.g. --device cpu --workers 4")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="run only runs K, K+N, K+2N, ... of the study (0 <= K < N), for a job array")
    parser.add_argument("--reclaim", action="store_true",
                        help="take over the runs claimed by processes that are gone but that this host cannot "
                             "check (killed on another machine)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write the tables and plots of a study whose runs are all finished")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM, help="NSD tolerance in mm")
    add_output_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults (or --config), then --folds/--epochs/--seed, then --set, as in train.py."""
    settings = parse_overrides(args.set)
    fixed = sorted(set(settings) & set(PER_RUN_KEYS))
    if fixed:
        raise ConfigError(f"--set {', '.join(fixed)}: the study sets these per run; "
                          "choose networks with --networks and losses with --losses")
    flags = {"train.folds": args.folds, "train.epochs": args.epochs, "train.seed": args.seed}
    config = build_config(args.config, flags, settings)
    if config.train.networks_per_fold != 1:
        raise ConfigError(f"train.networks_per_fold: a study trains and scores one network per network, loss and "
                          f"fold, so it must be 1, got {config.train.networks_per_fold}")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)

    def run() -> int:
        study = Study(
            data=args.data,
            out=args.out,
            config=config_from_args(args),
            losses=parse_losses(args.losses),
            networks=parse_networks(args.networks) if args.networks is not None else (),
            nsd_tolerance_mm=args.nsd_tolerance,
            device=args.device,
            progress=not args.no_progress,
        )
        if args.report:
            if args.shard or args.devices or args.workers != 1:
                raise ConfigError("--report trains nothing: leave out --shard, --devices and --workers")
            print(report_summary(study, report_study(study, args.reclaim)))
            return 0
        devices = worker_devices(args.device, args.devices, args.workers) if args.devices or args.workers != 1 else []
        print(outcome_summary(study, run_study(study, args.shard, devices, args.reclaim)))
        return 0

    return run_reporting_errors(run)


def report_summary(study: Study, rows: Sequence[StudyRow]) -> str:
    return (f"{len(rows)} held-out case score(s) over {len(study.networks)} network(s) x {len(study.losses)} "
            f"loss(es); tables and plots in {study.out}")


def outcome_summary(study: Study, outcome: StudyOutcome) -> str:
    """What this process did, who holds the runs it left, and where the tables are or when they will be."""
    counts = {status: [o for o in outcome.outcomes if o.status == status] for status in (TRAINED, FINISHED, HELD)}
    lines = [f"{len(counts[TRAINED])} run(s) trained, {len(counts[FINISHED])} already finished, "
             f"{len(counts[HELD])} left to the processes that claim them"]
    lines += [f"  {o.run}: claimed by {o.holder}" for o in counts[HELD]]
    if any(o.holder is not None and not o.holder.is_local for o in counts[HELD]):
        lines.append("  (a claim from another host stands until its run ends; if its process is gone, "
                     "rerun with --reclaim)")
    if outcome.rows is not None:
        lines.append(report_summary(study, outcome.rows))
    elif outcome.report_holder is not None:
        lines.append(f"every run is finished; the tables and plots are being written by {outcome.report_holder}")
    else:
        waiting = ", ".join(str(run) for run in outcome.unfinished)
        lines.append(f"{len(outcome.unfinished)} run(s) of the study not finished yet ({waiting}): the process that "
                     "finishes the last one writes the tables and plots, or run this command with --report "
                     "once all are finished")
    return "\n".join(lines)


def parse_losses(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of loss names, in the order given, each validated against LOSS_NAMES."""
    if text.strip() == ALL_LOSSES:
        return LOSS_NAMES
    return _parse_names(text, "--losses", "loss", LOSS_NAMES, f"use {ALL_LOSSES!r} or a comma list of")


def parse_networks(text: str) -> tuple[str, ...]:
    """A comma list of network names (``network.name`` values), in the order given."""
    return _parse_names(text, "--networks", "network", NETWORK_NAMES, "use a comma list of")


def _parse_names(text: str, flag: str, kind: str, known: Sequence[str], usage: str) -> tuple[str, ...]:
    """The names of a comma list, in the order given; unknown, missing or repeated names are refused."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(
            f"{flag}: unknown {kind} name(s) {', '.join(unknown) or '(none given)'}; {usage}: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"{flag}: a {kind} is listed twice in {text!r}")
    return tuple(names)
