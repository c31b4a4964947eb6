"""`pipeline report-figures EXP`: the figures and tables `snakemake --report` shows, under `<work_dir>/report/`.

Each part reads one stage's files and writes its own (the paths are `Layout.report_*`):

- `training`: the train stage's loss curve (`loss` and the held-out `eval_loss` against the step, log
  scale when every value is positive, the learning rate below) from its run's metrics.jsonl;
- `autoencoder`: the same curve for the train_autoencoder stage (when the experiment trains its own);
- `latents`: the index's per-channel mean ± std, its item durations (figure), and a table of its size
  and statistics (HTML, and the channels as CSV);
- `samples`: one HTML page playing every sampled WAV (embedded as data URIs, checked against the
  sha256 in samples.json), with the settings. Snakemake's report offers a WAV only as a download; an
  HTML result it shows in a frame, so the page is the supported way to listen inside the report.

Figures are SVG with their text kept as text, no date and a fixed id salt (the same files, the same
bytes); every file is written atomically. Torch is imported only to find a training run's directory."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserFacingError
from pipeline.layout import Layout, layout_of
from pipeline.utils.atomic import atomic_path, sha256_file, write_bytes_atomic

PARTS = ("training", "autoencoder", "latents", "samples")
SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "pipeline-report"}
SMOOTH_FROM = 50  # a loss curve with at least this many points also gets a moving average
HISTOGRAM_BINS = 30


# --- training curves ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # numpy fields: no field-wise ==
class Curve:
    """One logged scalar against the optimizer step, in step order."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True, eq=False)
class TrainingMetrics:
    """What a run's metrics.jsonl holds for the loss figure."""

    path: Path
    loss: Curve
    eval_loss: Curve
    lr: Curve

    @property
    def last_step(self) -> int:
        return int(max(curve.steps[-1] for curve in (self.loss, self.eval_loss, self.lr) if len(curve)))


def read_metrics(path: str | Path) -> TrainingMetrics:
    """`loss`, `eval_loss` and `lr` of a metrics.jsonl as the training loop writes it (one JSON object
    per line, each with a `step`). A missing file, a line that is not such an object or a file with
    no loss at all is a UserFacingError naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(
            f"{path}: no such file; the run has logged no metrics yet: train first "
            "(`pipeline train EXP` / `pipeline train-autoencoder EXP`, or `snakemake train`)"
        )
    points: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": [], "lr": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserFacingError(f"{path}:{number} is not JSON ({error.msg}): is it a metrics.jsonl?") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserFacingError(f"{path}:{number} has no integer 'step': is it a metrics.jsonl?")
        for name, found in points.items():
            value = record.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                found.append((record["step"], float(value)))
    if not points["loss"] and not points["eval_loss"]:
        raise UserFacingError(f"{path} holds no 'loss' or 'eval_loss' values: nothing to plot")
    return TrainingMetrics(path, *(_curve(points[name]) for name in ("loss", "eval_loss", "lr")))


def _curve(points: list[tuple[int, float]]) -> Curve:
    points = sorted(points, key=lambda point: point[0])  # stable: a step logged twice keeps its order
    return Curve(np.asarray([step for step, _ in points], dtype=np.int64), np.asarray([v for _, v in points]))


@dataclass(frozen=True)
class LossFigure:
    path: Path
    log_scale: bool
    with_lr: bool


def plot_loss_curve(metrics_path: str | Path, out: str | Path, title: str) -> LossFigure:
    """SVG of the training and held-out loss against the step (log scale when every value is positive)
    and, when logged, the learning rate below it."""
    metrics = read_metrics(metrics_path)
    with_lr = len(metrics.lr) > 0
    figure = _figure((8, 6.5 if with_lr else 4.5))
    axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.4)) if with_lr else [figure.subplots()]
    top = axes[0]
    if len(metrics.loss):
        top.plot(metrics.loss.steps, metrics.loss.values, color="tab:blue", linewidth=0.8, alpha=0.5, label="loss")
        if len(metrics.loss) >= SMOOTH_FROM:
            window = max(3, len(metrics.loss) // 25)
            top.plot(
                metrics.loss.steps,
                _moving_average(metrics.loss.values, window),
                color="tab:blue",
                linewidth=1.6,
                label=f"loss, mean of {window} logged steps",
            )
    if len(metrics.eval_loss):
        top.plot(
            metrics.eval_loss.steps,
            metrics.eval_loss.values,
            color="tab:orange",
            marker="o",
            markersize=4,
            linewidth=1.4,
            label="held-out loss (eval_loss)",
        )
    values = np.concatenate([metrics.loss.values, metrics.eval_loss.values])
    log_scale = bool(np.all(values > 0))
    if log_scale:
        top.set_yscale("log")
    top.set_ylabel("loss")
    top.grid(True, which="both", alpha=0.3)
    top.legend(loc="upper right")
    top.set_title(f"{title}: {_last(metrics)}")
    if with_lr:
        bottom = axes[1]
        bottom.plot(metrics.lr.steps, metrics.lr.values, color="tab:green", linewidth=1.2)
        bottom.set_ylabel("learning rate")
        bottom.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        bottom.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    return LossFigure(_save_svg(figure, out), log_scale, with_lr)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` points; shorter windows at the ends (no edge bias towards 0)."""
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return sums / counts


def _last(metrics: TrainingMetrics) -> str:
    parts = [f"step {metrics.last_step}"]
    if len(metrics.loss):
        parts.append(f"loss {metrics.loss.values[-1]:.4g}")
    if len(metrics.eval_loss):
        parts.append(f"held-out {metrics.eval_loss.values[0]:.4g} -> {metrics.eval_loss.values[-1]:.4g}")
    return ", ".join(parts)


# --- latent statistics ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LatentSummary:
    """The size and statistics of an index (or a store), from `pipeline.latents.inspect.describe`."""

    path: Path
    kind: str
    items: int
    frames: int
    seconds: float
    latent_dim: int | None
    latent_rate: float
    sample_rate: int | None
    shards: int
    discrete: bool
    stats_frames: int
    mean: np.ndarray | None
    std: np.ndarray | None
    item_seconds: np.ndarray

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs for the summary table."""
        rows = [
            ("file", f"{self.path} ({self.kind})"),
            ("shard stores", f"{self.shards:,}"),
            ("items", f"{self.items:,}"),
            ("latent frames", f"{self.frames:,}"),
            ("audio", f"{self.seconds / 3600:.3f} h ({self.seconds:,.1f} s)"),
            ("latent rate", f"{self.latent_rate:.4g} frames/s (audio at {self.sample_rate} Hz)"),
            ("latent channels", str(self.latent_dim)),
            ("values", "discrete codes" if self.discrete else "continuous latents"),
        ]
        if len(self.item_seconds):
            seconds = self.item_seconds
            rows.append(
                (
                    "item duration",
                    f"min {seconds.min():.2f} s, median {np.median(seconds):.2f} s, max {seconds.max():.2f} s",
                )
            )
        if self.mean is not None:
            rows.append(("statistics over", f"{self.stats_frames:,} frames"))
        return rows


def read_latent_summary(index_path: str | Path) -> LatentSummary:
    """Everything the latents part shows; a missing index is a UserFacingError naming it."""
    from pipeline.latents.inspect import describe, open_readable
    from pipeline.latents.store import read_index

    index_path = Path(index_path)
    if not index_path.is_file():
        raise UserFacingError(
            f"{index_path}: no such file; build the index first (`pipeline index EXP` or `snakemake pre_encode`)"
        )
    description = describe(index_path)
    file, attributes = open_readable(index_path)
    with file:
        lengths = np.asarray(read_index(file)["length"], dtype=np.float64)
    stats = description["stats"] or {}
    latents = description["latents"]
    shards = description["provenance"].get("shards")
    has_stats = "mean" in stats and len(stats["mean"]) > 0
    return LatentSummary(
        path=index_path,
        kind=description["kind"],
        items=description["items"],
        frames=description["frames"],
        seconds=description["seconds"],
        latent_dim=latents["latent_dim"],
        latent_rate=latents["latent_rate"],
        sample_rate=latents["sample_rate"],
        shards=len(shards) if isinstance(shards, list) else 1,
        discrete=description["discrete"]["is_discrete"],
        stats_frames=int(stats.get("frames", 0)),
        mean=np.asarray(stats["mean"], dtype=np.float64) if has_stats else None,
        std=np.asarray(stats["std"], dtype=np.float64) if has_stats else None,
        item_seconds=lengths / float(attributes["latent_rate"]),
    )


def plot_latents(summary: LatentSummary, out: str | Path) -> Path:
    """SVG: per-channel mean ± std (and each channel's std) above a histogram of item durations."""
    figure = _figure((9, 7))
    stats_axes, durations = figure.subplots(2, 1, height_ratios=(3, 2))
    figure.suptitle(
        f"{summary.items:,} items, {summary.frames:,} latent frames, {summary.seconds / 3600:.3f} h "
        f"in {summary.shards} shard store(s)"
    )
    if summary.mean is not None and summary.std is not None:
        channels = np.arange(len(summary.mean))
        stats_axes.bar(channels, summary.std, color="tab:blue", alpha=0.25, label="std")
        stats_axes.errorbar(
            channels, summary.mean, yerr=summary.std, fmt="o", color="tab:blue", capsize=2, label="mean ± std"
        )
        stats_axes.axhline(0.0, color="grey", linewidth=0.5)
        stats_axes.set_xlabel("latent channel")
        stats_axes.set_ylabel("value")
        stats_axes.xaxis.get_major_locator().set_params(integer=True)
        stats_axes.legend(loc="best")
        stats_axes.set_title(f"per-channel statistics over {summary.stats_frames:,} frames")
    else:
        why = "discrete codes" if summary.discrete else "an empty index"
        stats_axes.text(0.5, 0.5, f"no per-channel statistics ({why})", ha="center", va="center")
        stats_axes.set_axis_off()
    if len(summary.item_seconds):
        durations.hist(summary.item_seconds, bins=min(HISTOGRAM_BINS, max(1, len(summary.item_seconds))))
        durations.set_xlabel("item duration (s)")
        durations.set_ylabel("items")
        durations.set_title("item durations")
    else:
        durations.text(0.5, 0.5, "no items", ha="center", va="center")
        durations.set_axis_off()
    return _save_svg(figure, out)


def latent_table_html(summary: LatentSummary) -> str:
    """A small standalone HTML page: the summary table and one row per channel."""
    body = [f"<h1>Latents: {html.escape(summary.path.name)}</h1>", _html_table(("", ""), summary.rows(), header=False)]
    if summary.mean is not None and summary.std is not None:
        channels = [(str(c), f"{m:+.4f}", f"{s:.4f}") for c, (m, s) in enumerate(zip(summary.mean, summary.std))]
        body += ["<h2>Per-channel statistics</h2>", _html_table(("channel", "mean", "std"), channels)]
    return _html_page(f"Latents: {summary.path.name}", body)


def latent_csv(summary: LatentSummary) -> str:
    """`channel,mean,std`, one row per channel (no rows for codes, which have no statistics)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("channel", "mean", "std"))
    if summary.mean is not None and summary.std is not None:
        writer.writerows((c, repr(float(m)), repr(float(s))) for c, (m, s) in enumerate(zip(summary.mean, summary.std)))
    return text.getvalue()


# --- samples ------------------------------------------------------------------------------------------
def samples_page(settings_path: str | Path) -> str:
    """HTML playing every file samples.json lists (each WAV embedded, after checking its sha256)."""
    settings_path = Path(settings_path)
    if not settings_path.is_file():
        raise UserFacingError(
            f"{settings_path}: no such file; generate the samples first (`pipeline sample EXP` or `snakemake sample`)"
        )
    try:
        record = json.loads(settings_path.read_text(encoding="utf-8"))
        files, settings = record["files"], record["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserFacingError(f"{settings_path} is not a samples.json written by `pipeline sample` ({error})") from None
    players = []
    for entry in files:
        path = settings_path.parent / entry["path"]
        if not path.is_file():
            raise UserFacingError(
                f"{path}: no such file, but {settings_path} lists it: run `pipeline sample EXP` again"
            )
        if sha256_file(path) != entry["sha256"]:
            raise UserFacingError(
                f"{path} changed since {settings_path} was written (sha256 differs): run `pipeline sample EXP` again"
            )
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        players.append(
            f'<div class="sample"><h3>{html.escape(path.name)}</h3>'
            f'<audio controls preload="metadata" src="data:audio/wav;base64,{data}"></audio>'
            f'<p class="hash">sha256 {html.escape(entry["sha256"])}</p></div>'
        )
    rows = [(name, _value(value)) for name, value in settings.items()]
    rows += [(name, _value(record[name])) for name in ("sample_rate", "channels", "model_stage_hash") if name in record]
    body = [f"<h1>Samples ({len(files)} files)</h1>", *players, "<h2>Settings</h2>", _html_table(("", ""), rows, False)]
    return _html_page("Samples", body)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- the command -------------------------------------------------------------------------------------
def available_parts(experiment: Any) -> list[str]:
    """The parts an experiment has: latents with an autoencoder, its training curve when the workflow
    trains it, the training curve and the samples with a train section (which needs the autoencoder)."""
    parts = []
    if experiment.autoencoder is not None:
        if experiment.autoencoder.checkpoint is None:
            parts.append("autoencoder")
        parts.append("latents")
        if experiment.train is not None:
            parts = ["training", *parts, "samples"]
    return [part for part in PARTS if part in parts]


def write_report_figures(experiment: Any, parts: Sequence[str] | None = None) -> list[Path]:
    """Write the files of `parts` (every available part by default); returns them in order."""
    available = available_parts(experiment)
    wanted = list(dict.fromkeys(parts)) if parts else available
    for part in wanted:
        if part not in PARTS:
            raise UserFacingError(f"no report part {part!r}; the parts are {', '.join(PARTS)}")
        if part not in available:
            raise UserFacingError(f"experiment '{experiment.name}' has no {part} report: {_why_not(part)}")
    layout = layout_of(experiment)
    written: list[Path] = []
    for part in wanted:
        written += _WRITERS[part](experiment, layout)
    return written


def _why_not(part: str) -> str:
    return {
        "training": "it has no train section (or no autoencoder)",
        "samples": "it has no train section (or no autoencoder)",
        "latents": "it has no autoencoder section",
        "autoencoder": "it trains no autoencoder (none, or autoencoder.checkpoint is set)",
    }[part]


def _training(experiment: Any, layout: Layout) -> list[Path]:
    from pipeline.train.stage import run_files  # torch: only to name the run directory

    model = experiment.train.model.type
    figure = plot_loss_curve(run_files(experiment).metrics, layout.report_training_loss, f"train ({model} model)")
    return [figure.path]


def _autoencoder(experiment: Any, layout: Layout) -> list[Path]:
    from pipeline.train.autoencoder import run_files

    return [plot_loss_curve(run_files(experiment).metrics, layout.report_autoencoder_loss, "train_autoencoder").path]


def _latents(experiment: Any, layout: Layout) -> list[Path]:
    summary = read_latent_summary(layout.index)
    figure = plot_latents(summary, layout.report_latents_figure)
    write_bytes_atomic(layout.report_latents_table, latent_table_html(summary).encode("utf-8"))
    write_bytes_atomic(layout.report_latents_csv, latent_csv(summary).encode("utf-8"))
    return [figure, layout.report_latents_table, layout.report_latents_csv]


def _samples(experiment: Any, layout: Layout) -> list[Path]:
    write_bytes_atomic(layout.report_samples, samples_page(layout.samples_settings).encode("utf-8"))
    return [layout.report_samples]


_WRITERS = {"training": _training, "autoencoder": _autoencoder, "latents": _latents, "samples": _samples}


# --- helpers ------------------------------------------------------------------------------------------
def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure  # lazily: only the figures need matplotlib (Agg, no pyplot state)

    return Figure(figsize=size, layout="constrained")


def _save_svg(figure: Any, out: str | Path) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    out = Path(out)
    with matplotlib.rc_context(SVG_SETTINGS), atomic_path(out) as temporary:
        figure.savefig(temporary, format="svg", metadata={"Date": None})
    return out


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """Escaped cells; without `header`, the first column names each row (<th>)."""

    def cell(text: str, tag: str) -> str:
        return f"<{tag}>{html.escape(text)}</{tag}>"

    head = "<tr>" + "".join(cell(text, "th") for text in headers) + "</tr>" if header else ""
    body = "".join(
        "<tr>" + "".join(cell(text, "th" if not header and n == 0 else "td") for n, text in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}td{font-variant-numeric:tabular-nums}"
    ".sample{margin-bottom:1em}.sample h3{margin:0.2em 0}.hash{color:#777;font-size:0.8em;margin:0.2em 0}"
)


def _html_page(title: str, body: Sequence[str]) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
