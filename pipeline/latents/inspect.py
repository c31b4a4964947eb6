"""`pipeline inspect PATH`: what a shard store or the index holds, as a dict, a text report or a PNG.

`describe` summarises the whole file (size, latent layout, provenance, per-channel statistics, the
largest and smallest items); `describe_item` one item; `render` turns either into aligned text;
`plot` draws one item's latent and the per-channel statistics."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import UserFacingError
from pipeline.latents.store import KINDS, data_name, open_store, read_index

EXTREMES = 5  # largest / smallest items listed
TOP_CODES = 5  # most frequent codes listed per codebook
READ_ATTRIBUTES = ("latent_rate", "items", "frames")  # what describe / plot cannot do without


# --- opening ----------------------------------------------------------------------------------------
def open_readable(path: str | Path) -> tuple[h5py.File, dict[str, Any]]:
    """`open_store`, also requiring what describing and plotting rely on (else: run `pipeline verify`)."""
    file, attributes = open_store(path)
    missing = [name for name in READ_ATTRIBUTES if name not in attributes] + [
        f"/{name}" for name in ("index", data_name(attributes)) if name not in file
    ]
    if missing:
        file.close()
        raise UserFacingError(f"{path} is damaged, it lacks {', '.join(missing)}: run `pipeline verify {path}`")
    return file, attributes


def provenance(attributes: dict[str, Any]) -> dict[str, Any]:
    """Root attributes with the JSON-valued ones (autoencoder_config, shards) parsed."""
    parsed = dict(attributes)
    for name in ("autoencoder_config", "shards"):
        if isinstance(parsed.get(name), str):
            parsed[name] = json.loads(parsed[name])
    return parsed


def find_row(keys: Sequence[str], key: str, path: str | Path) -> int:
    """The row of `key`; UserFacingError with close matches when it is not there."""
    try:
        return list(keys).index(key)
    except ValueError:
        close = close_keys(key, keys)
        hint = f"; did you mean {', '.join(repr(match) for match in close)}?" if close else ""
        raise UserFacingError(f"no item {key!r} in {path} ({len(keys)} items){hint}") from None


def close_keys(key: str, keys: Sequence[str], count: int = 5) -> list[str]:
    """Keys containing `key` (shard keys carry prefixes), then difflib's closest ones."""
    containing = [candidate for candidate in keys if key in candidate][:count]
    similar = difflib.get_close_matches(key, keys, n=count)
    return list(dict.fromkeys(containing + similar))[:count]


# --- describing ------------------------------------------------------------------------------------
def describe(path: str | Path) -> dict[str, Any]:
    """A summary of a shard store or index (plain JSON-able values)."""
    file, attributes = open_readable(path)
    with file:
        index = read_index(file)
        name = data_name(attributes)
        shape, dtype = (list(file[name].shape), str(file[name].dtype)) if name in file else (None, None)
        with_scale = "latents_scale" in file
        stats = _stats(file)
    rate = float(attributes["latent_rate"])
    seconds = float(attributes.get("seconds", attributes["frames"] / rate))
    return {
        "path": str(path),
        "kind": KINDS[attributes["format"]],
        "items": int(attributes["items"]),
        "frames": int(attributes["frames"]),
        "seconds": seconds,
        "hours": seconds / 3600,
        "latents": {
            "dataset": name,
            "shape": shape,
            "dtype": dtype,
            "latent_rate": rate,
            "downsampling_ratio": attributes.get("downsampling_ratio"),
            "sample_rate": attributes.get("sample_rate"),
            "latent_dim": attributes.get("latent_dim"),
            "with_scale": with_scale,
        },
        "discrete": {
            "is_discrete": bool(attributes.get("is_discrete")),
            "n_codebooks": attributes.get("n_codebooks"),
            "codebook_size": attributes.get("codebook_size"),
        },
        "provenance": provenance(attributes),
        "stats": stats,
        "largest": _extremes(index, rate, largest=True),
        "smallest": _extremes(index, rate, largest=False),
    }


def _stats(file: h5py.File) -> dict[str, Any] | None:
    if "stats" not in file:
        return None
    group = file["stats"]
    return {name: group[name][()].tolist() for name in ("frames", "mean", "std") if name in group}


def _extremes(index: dict[str, Any], rate: float, largest: bool) -> list[dict[str, Any]]:
    lengths = np.asarray(index["length"])
    order = np.argsort(-lengths if largest else lengths, kind="stable")[:EXTREMES]
    return [_item_size(index["key"][row], int(lengths[row]), rate) for row in order]


def _item_size(key: str, frames: int, rate: float) -> dict[str, Any]:
    return {"key": key, "frames": frames, "seconds": frames / rate}


def describe_item(path: str | Path, key: str) -> dict[str, Any]:
    """One item: its index row, parsed metadata and a summary of its latents (or codes)."""
    file, attributes = open_readable(path)
    with file:
        index = read_index(file)
        row = find_row(index["key"], key, path)
        values = _item_values(file, attributes, index, row)
    rate = float(attributes["latent_rate"])
    description = {
        "path": str(path),
        "key": key,
        "row": row,
        "offset": int(index["offset"][row]),
        "frames": int(index["length"][row]),
        "seconds": int(index["length"][row]) / rate,
        "seconds_start": float(index["seconds_start"][row]),
        "seconds_total": float(index["seconds_total"][row]),
        "metadata": json.loads(index["metadata_json"][row] or "{}"),
    }
    if "shard" in index:
        description["shard"] = provenance(attributes)["shards"][int(index["shard"][row])]
    if attributes.get("is_discrete"):
        description["codes"] = _code_summary(values, int(attributes.get("codebook_size") or 0))
    else:
        description["channels"] = _channel_summary(values)
    return description


def _item_values(file: h5py.File, attributes: dict[str, Any], index: dict[str, Any], row: int) -> np.ndarray:
    offset, length = int(index["offset"][row]), int(index["length"][row])
    return file[data_name(attributes)][offset : offset + length]


def _channel_summary(values: np.ndarray) -> dict[str, list[float]]:
    values = values.astype(np.float64)
    return {
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }


def _code_summary(codes: np.ndarray, codebook_size: int) -> dict[str, Any]:
    codebooks = []
    for column in codes.T:
        used, counts = np.unique(column, return_counts=True)
        top = np.argsort(-counts, kind="stable")[:TOP_CODES]
        codebooks.append(
            {
                "distinct": int(len(used)),
                "min": int(column.min()),
                "max": int(column.max()),
                "top": [[int(used[i]), int(counts[i])] for i in top],
            }
        )
    return {"codebook_size": codebook_size, "codebooks": codebooks}


# --- text --------------------------------------------------------------------------------------------
def render(description: dict[str, Any]) -> str:
    """A readable, aligned text report of `describe` or `describe_item` output."""
    lines = _render_item(description) if "key" in description else _render_store(description)
    return "\n".join(lines) + "\n"


def _render_store(description: dict[str, Any]) -> list[str]:
    latents, discrete = description["latents"], description["discrete"]
    shape = "x".join(str(size) for size in latents["shape"] or ["?"])
    codes = (
        f"yes ({discrete['n_codebooks']} codebooks of {discrete['codebook_size']})" if discrete["is_discrete"] else "no"
    )
    lines = _fields(
        [
            ("path", f"{description['path']} ({description['kind']})"),
            ("items", f"{description['items']:,}"),
            ("frames", f"{description['frames']:,}"),
            ("audio", f"{description['hours']:.3f} h ({description['seconds']:.1f} s)"),
            (
                "data",
                f"/{latents['dataset']} {latents['dtype']} ({shape})" + (" + scale" if latents["with_scale"] else ""),
            ),
            (
                "latent rate",
                f"{latents['latent_rate']:.4g} Hz (downsampling {latents['downsampling_ratio']} "
                f"at {latents['sample_rate']} Hz)",
            ),
            ("discrete", codes),
        ]
    )
    attributes = {key: value for key, value in description["provenance"].items() if key != "autoencoder_config"}
    lines += ["", "provenance:", *_fields(sorted(attributes.items()), indent=2)]
    lines += [
        "",
        "autoencoder config:",
        *_fields(_flatten(description["provenance"].get("autoencoder_config") or {}), indent=2),
    ]
    lines += ["", *_render_stats(description["stats"])]
    for name in ("largest", "smallest"):
        rows = [(item["key"], f"{item['frames']:,}", f"{item['seconds']:.2f}") for item in description[name]]
        lines += ["", f"{name} items:", *_table(("key", "frames", "seconds"), rows, indent=2)]
    return lines


def _render_stats(stats: dict[str, Any] | None) -> list[str]:
    if not stats or "mean" not in stats:
        return ["per-channel statistics: none (discrete codes or an empty store)"]
    rows = [
        (str(channel), f"{mean:+.4f}", f"{std:.4f}")
        for channel, (mean, std) in enumerate(zip(stats["mean"], stats["std"]))
    ]
    return [
        f"per-channel statistics ({stats.get('frames', 0):,} frames):",
        *_table(("channel", "mean", "std"), rows, indent=2),
    ]


def _render_item(description: dict[str, Any]) -> list[str]:
    fields = [
        ("item", description["key"]),
        ("file", description["path"] + (f" (shard {description['shard']})" if "shard" in description else "")),
        ("row", str(description["row"])),
        ("frames", f"{description['frames']:,} (offset {description['offset']:,})"),
        (
            "seconds",
            f"{description['seconds']:.2f} s (source: start {description['seconds_start']:.2f} s, "
            f"total {description['seconds_total']:.2f} s)",
        ),
    ]
    lines = _fields(fields)
    lines += ["", "metadata:", *_fields(_flatten(description["metadata"]), indent=2)]
    if "channels" in description:
        channels = description["channels"]
        signs = {"mean": "+", "std": "", "min": "+", "max": "+"}
        rows = [
            (str(channel), *(f"{channels[name][channel]:{sign}.4f}" for name, sign in signs.items()))
            for channel in range(len(channels["mean"]))
        ]
        lines += ["", "channels:", *_table(("channel", "mean", "std", "min", "max"), rows, indent=2)]
    else:
        codes = description["codes"]
        rows = [
            (
                str(number),
                str(book["distinct"]),
                f"{book['min']}..{book['max']}",
                " ".join(f"{code}:{count}" for code, count in book["top"]),
            )
            for number, book in enumerate(codes["codebooks"])
        ]
        headers = ("codebook", "distinct", "range", "most common (code:count)")
        lines += ["", f"codes (codebook size {codes['codebook_size']}):", *_table(headers, rows, indent=2, left=(0, 3))]
    return lines


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted.key, value) pairs."""
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in _flatten(item, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)] if prefix else []


def _fields(pairs: Iterable[tuple[str, Any]], indent: int = 0) -> list[str]:
    pairs = list(pairs)
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return [f"{' ' * indent}{key + ':':<{width}} {_text(value)}" for key, value in pairs]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0, left: Sequence[int] = (0,)
) -> list[str]:
    """Aligned columns: those in `left` left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            f"{cell:<{width}}" if column in left else f"{cell:>{width}}"
            for column, (cell, width) in enumerate(zip(cells, widths))
        ]
        return (" " * indent + "  ".join(parts)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


# --- plot --------------------------------------------------------------------------------------------
def plot(path: str | Path, out_png: str | Path, key: str | None = None) -> Path:
    """PNG of one item's latent (channels x seconds; the first item without `key`) and the store's
    per-channel mean ± std."""
    file, attributes = open_readable(path)
    with file:
        index = read_index(file)
        if not index["key"]:
            raise UserFacingError(f"{path} holds no items: nothing to plot")
        row = find_row(index["key"], key, path) if key is not None else 0
        values = _item_values(file, attributes, index, row)
        stats = _stats(file)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only plots need matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 2))
    _plot_item(top, values, float(attributes["latent_rate"]), index["key"][row], bool(attributes.get("is_discrete")))
    _plot_stats(bottom, stats)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png", dpi=100)
    return out_png


def _plot_item(axes: Any, values: np.ndarray, rate: float, key: str, discrete: bool) -> None:
    """Channels (or codebooks) x time image; latents on a diverging colour map centred on 0."""
    frames, channels = values.shape
    image = values.T.astype(np.float32)
    limit = float(np.nanmax(np.abs(image))) if not discrete else 0.0
    scale = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit} if limit > 0 else {"cmap": "viridis"}
    shown = axes.imshow(
        image,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=(0, frames / rate, -0.5, channels - 0.5),
        **scale,
    )
    axes.set_title(f"{key}: {frames} frames ({frames / rate:.2f} s)")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("codebook" if discrete else "channel")
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.figure.colorbar(shown, ax=axes, label="code" if discrete else "value")


def _plot_stats(axes: Any, stats: dict[str, Any] | None) -> None:
    if not stats or "mean" not in stats:
        axes.text(0.5, 0.5, "no per-channel statistics (discrete codes or an empty store)", ha="center", va="center")
        axes.set_axis_off()
        return
    channels = np.arange(len(stats["mean"]))
    axes.errorbar(channels, stats["mean"], yerr=stats["std"], fmt="o", markersize=3, capsize=2)
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_title(f"per-channel mean ± std over {stats.get('frames', 0):,} frames")
    axes.set_xlabel("channel")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel("value")
