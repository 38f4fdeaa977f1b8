"""Training curves of one or several runs on the same axes (``python -m dinov2.plot RUN_DIR ... --output F``).

What a run folder holds and is read here:

- ``training_metrics.json``: one JSON object per logged iteration, written by
  :class:`dinov2.logging.MetricLogger` (``iteration``, ``iter_time``, ``data_time``, ``images_per_sec``, ``lr``,
  ``wd``, ``mom``, ``last_layer_lr``, ``total_loss``, every loss term ``*_loss``, ``<module>_grad_norm``). A
  resumed run appends again from its checkpoint: the last record of an iteration wins. Any other numeric key (a
  later online k-NN monitor, for instance) gets its own panel, so new scalars are plotted without a change here.
- ``config.yaml``: the teacher temperature is not logged, so its schedule is rebuilt from the run's config at the
  logged iterations (a ``teacher_temp`` key in the metrics, if present, is used instead).
- evaluation results anywhere below the run folder: ``results_eval_<protocol>.json`` files in the released
  layouts (one ``{key: value}`` per line for k-NN and logistic regression; ``iter: N`` blocks for the linear
  probe, whose last block counts). Top-1 values (keys matching ``top-1`` / ``Top 1`` / ``accuracy``) are plotted
  against the training iteration of the evaluated export, read from its folder name (``eval/training_<N>/``,
  ``manual_<N>``), or against the run's last logged iteration when the path names none.

matplotlib (the ``plot`` extra) draws through its Agg canvas: no display, no global backend switch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("dinov2")

__all__ = ["Series", "Run", "Panel", "read_run", "panels", "plot_runs"]

METRICS_FILE = "training_metrics.json"
_SKIPPED = {"iteration", "current_batch_size"}
_LOSS_ORDER = ("total_loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss")
_GROUPS = (  # (panel title, keys), in display order, after the loss terms
    ("learning rate", ("lr", "last_layer_lr")),
    ("weight decay", ("wd",)),
    ("teacher momentum", ("mom",)),
    ("teacher temperature", ("teacher_temp",)),
    ("images / s (all processes)", ("images_per_sec",)),
    ("seconds per iteration", ("iter_time", "data_time")),
)
_EXPORT_ITERATION = re.compile(r"^(?:training|manual)_(\d+)$")
_TOP1 = re.compile(r"top.?1|accuracy", re.IGNORECASE)


@dataclass
class Series:
    """Values at iterations (sorted by iteration, one value per iteration)."""

    iterations: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class Run:
    """One run folder: ``scalars`` from the training metrics, ``evaluations`` named ``"<protocol>: <key>"``."""

    name: str
    path: Path
    scalars: dict[str, Series]
    evaluations: dict[str, Series]


@dataclass
class Panel:
    title: str
    keys: list[str]  # scalar keys, or evaluation names when ``evaluation``
    evaluation: bool = False


def _series(points: dict[str, dict[int, float]]) -> dict[str, Series]:
    out = {}
    for key, by_iteration in points.items():
        ordered = sorted(by_iteration.items())
        out[key] = Series([i for i, _ in ordered], [v for _, v in ordered])
    return out


def read_training_metrics(path: str | os.PathLike) -> dict[str, Series]:
    """Every numeric key of a ``training_metrics.json`` file as a series over iterations."""
    points: dict[str, dict[int, float]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON object ({err}); was the file cut short?") from err
        iteration = record.get("iteration")
        if not isinstance(iteration, int):
            raise ValueError(f"{path}, line {number}: no integer 'iteration' key: not a MetricLogger file")
        for key, value in record.items():
            if key not in _SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.setdefault(key, {})[iteration] = float(value)
    return _series(points)


def _flatten(record: dict, prefix: str = "") -> Iterable[tuple[str, float]]:
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)


def read_eval_file(path: str | os.PathLike) -> dict[str, float]:
    """The top-1 values of a released-layout ``results_eval_<protocol>.json`` (later lines win)."""
    values: dict[str, float] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):  # k-NN / log. regression: one key per line; linear: a JSON line per block
            values.update((k, v) for k, v in _flatten(json.loads(line)) if _TOP1.search(k))
    return values


def read_eval_results(run_dir: Path, last_iteration: int | None) -> dict[str, Series]:
    """``"<protocol>: <key>"`` -> series over the training iterations of the evaluated exports."""
    points: dict[str, dict[int, float]] = {}
    for path in sorted(run_dir.rglob("results_eval_*.json")):
        if path.stem.endswith("_detailed"):
            continue
        protocol = path.stem.removeprefix("results_eval_")
        found = [int(m[1]) for part in path.relative_to(run_dir).parts if (m := _EXPORT_ITERATION.match(part))]
        iteration = found[-1] if found else last_iteration
        if iteration is None:
            logger.warning("skipping %s: no training iteration in its path and no training metrics", path)
            continue
        for key, value in read_eval_file(path).items():
            points.setdefault(f"{protocol}: {key}", {})[iteration] = value
    return _series(points)


def _teacher_temperature(run_dir: Path, iterations: list[int]) -> Series | None:
    config_path = run_dir / "config.yaml"
    if not config_path.is_file() or not iterations:
        return None
    from dinov2.utils.config import load_cfg
    from dinov2.utils.schedules import build_schedulers

    schedule = build_schedulers(load_cfg(config_path, validate=False)).teacher_temp
    return Series(list(iterations), [float(schedule[i]) for i in iterations])


def read_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """Read a run folder (see the module docstring); it needs a metrics file or evaluation results."""
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    metrics_path = run_dir / METRICS_FILE
    scalars = read_training_metrics(metrics_path) if metrics_path.is_file() else {}
    iterations = sorted({i for series in scalars.values() for i in series.iterations})
    if "teacher_temp" not in scalars:
        temperature = _teacher_temperature(run_dir, iterations)
        if temperature is not None:
            scalars["teacher_temp"] = temperature
    evaluations = read_eval_results(run_dir, iterations[-1] if iterations else None)
    if not scalars and not evaluations:
        raise FileNotFoundError(f"{run_dir} holds no {METRICS_FILE} and no results_eval_*.json: not a run folder")
    return Run(name=name or run_dir.name, path=run_dir, scalars=scalars, evaluations=evaluations)


def panels(runs: Sequence[Run]) -> list[Panel]:
    """The panels to draw: each loss term, then lr, wd, momentum, teacher temperature, gradient norms, images/s,
    time, any other logged scalar, and one panel per evaluation protocol."""
    keys = list(dict.fromkeys(k for run in runs for k in run.scalars))
    other_losses = sorted(k for k in keys if k.endswith("_loss") and k not in _LOSS_ORDER)
    losses = [k for k in _LOSS_ORDER if k in keys] + other_losses
    out = [Panel(k.removesuffix("_loss").replace("_", " ") + " loss", [k]) for k in losses]
    grouped = set(losses)
    for title, group in _GROUPS[:4]:
        if present := [k for k in group if k in keys]:
            out.append(Panel(title, present))
            grouped.update(present)
    if norms := [k for k in keys if k.endswith("_grad_norm")]:
        out.append(Panel("gradient norm before clipping", norms))
        grouped.update(norms)
    for title, group in _GROUPS[4:]:
        if present := [k for k in group if k in keys]:
            out.append(Panel(title, present))
            grouped.update(present)
    out += [Panel(k.replace("_", " "), [k]) for k in keys if k not in grouped]
    evaluations = list(dict.fromkeys(k for run in runs for k in run.evaluations))
    for protocol in dict.fromkeys(k.split(": ", 1)[0] for k in evaluations):
        out.append(Panel(f"evaluation: {protocol}", [k for k in evaluations if k.startswith(protocol + ": ")], True))
    return out


def plot_runs(runs: Sequence[Run], output: str | os.PathLike, title: str | None = None, columns: int = 3) -> Path:
    """Draw :func:`panels` for ``runs`` (one colour per run, one line style per key) into ``output``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'dinov2[plot]' (or pip install matplotlib)") from err
    layout = panels(runs)
    if not layout:
        raise ValueError("nothing to plot: the runs hold no numeric metrics")
    rows = math.ceil(len(layout) / columns)
    figure = Figure(figsize=(5.0 * columns, 3.2 * rows), layout="constrained")
    styles = ("-", "--", ":", "-.")
    for index, panel in enumerate(layout):
        axes = figure.add_subplot(rows, columns, index + 1)
        for r, run in enumerate(runs):
            source = run.evaluations if panel.evaluation else run.scalars
            for k, key in enumerate(panel.keys):
                if key in source:
                    series = source[key]
                    label = key.split(": ", 1)[-1] if panel.evaluation else key
                    axes.plot(series.iterations, series.values, color=f"C{r % 10}", linestyle=styles[k % len(styles)],
                              marker="o" if panel.evaluation or len(series.values) < 3 else None, markersize=3,
                              label=f"{run.name}: {label}" if len(runs) > 1 else label)  # fmt: skip
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("iteration", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if len(panel.keys) > 1 or len(runs) > 1:
            axes.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    return output
