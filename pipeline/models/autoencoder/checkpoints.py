"""Weights: strict loading of stable-audio-tools checkpoints and our own format (save and load).

Loading never falls back to random weights: any missing, unexpected or mis-shaped key is an error
that lists them all. stable-audio-tools' legacy weight norm (`weight_g` / `weight_v`, from
`torch.nn.utils.weight_norm`) is renamed to the parametrization keys torch uses now
(`parametrizations.weight.original0` / `original1`); prefixes such as `pretransform.model.` are only
stripped when the caller names them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.errors import UserFacingError
from pipeline.utils.atomic import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from pipeline.models.autoencoder.config import AutoencoderModelConfig
    from pipeline.models.autoencoder.model import Autoencoder

LEGACY_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
TOP_LEVEL = ("encoder", "decoder", "bottleneck")  # the autoencoder's own first key components


class CheckpointMismatch(UserFacingError):
    """The checkpoint does not fit the model; the message lists every difference."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch `.ckpt`/`.pt` (its `state_dict` entry if present)."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointMismatch(f"{path}: expected a state dict (mapping of tensors), got {type(loaded).__name__}")
    return dict(loaded)


class NormalisedState(dict):
    """Tensors under the model's key names that remember what the user's file calls each key, so
    errors name keys as the user sees them (`...weight_g`, with its prefix), not as torch renames them."""

    def __init__(self, tensors: dict[str, torch.Tensor], file_names: dict[str, str], prefix: str, legacy: bool):
        super().__init__(tensors)
        self.file_names, self.prefix, self.legacy = file_names, prefix, legacy

    def file_name(self, key: str) -> str:
        """The name of `key` in the file (or, for a key the file lacks, the name it would have there)."""
        if key in self.file_names:
            return self.file_names[key]
        if self.legacy:
            for old, new in LEGACY_WEIGHT_NORM.items():
                key = key.removesuffix(new) + old if key.endswith(new) else key
        return self.prefix + key


def normalise_keys(state_dict: Mapping[str, torch.Tensor], strip_prefixes: Iterable[str] = ()) -> NormalisedState:
    """Strip the named prefixes (only keys that carry one are kept) and rename legacy weight-norm keys."""
    prefixes = tuple(strip_prefixes)
    renamed: dict[str, torch.Tensor] = {}
    file_names: dict[str, str] = {}
    for original, tensor in state_dict.items():
        key = original
        if prefixes:
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                continue
            key = key[len(prefix) :]
        head, _, leaf = key.rpartition(".")
        if leaf in LEGACY_WEIGHT_NORM:
            key = f"{head}.{LEGACY_WEIGHT_NORM[leaf]}" if head else LEGACY_WEIGHT_NORM[leaf]
        renamed[key] = tensor
        file_names[key] = original
    legacy = any(name.rpartition(".")[2] in LEGACY_WEIGHT_NORM for name in file_names.values())
    return NormalisedState(renamed, file_names, prefixes[0] if len(prefixes) == 1 else "", legacy)


def wrapper_prefix(keys: Iterable[str], top_level: Iterable[str] = TOP_LEVEL) -> str | None:
    """The dotted prefix every key carries before the model's own names (`model.`, `module.autoencoder.`),
    or None when the keys already start with the model's names or share no such prefix."""
    tops = set(top_level)
    found: set[str] = set()
    for key in keys:
        parts = key.split(".")
        start = next((i for i, part in enumerate(parts[:-1]) if part in tops), None)
        if start is None:
            return None
        found.add(".".join(parts[:start]) + "." if start else "")
    return found.pop() if len(found) == 1 and "" not in found else None


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state_dict` into `module` or raise CheckpointMismatch listing every difference (named as
    in the file when `state_dict` came from `normalise_keys`)."""
    name = state_dict.file_name if isinstance(state_dict, NormalisedState) else str
    expected = module.state_dict()
    missing = sorted(name(key) for key in set(expected) - set(state_dict))
    unexpected = sorted(name(key) for key in set(state_dict) - set(expected))
    misshaped = sorted(
        f"{name(key)}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or misshaped:
        lines = [f"{source} does not fit the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointMismatch("\n".join(lines))
    module.load_state_dict(dict(state_dict), strict=True)


# --- our own format: safetensors weights + the JSON config that built them -------------------------
SAVED_FORMAT = "pipeline-autoencoder"
SAVED_VERSION = 1


def save_autoencoder(model: Autoencoder, path: str | Path, stage_hash: str | None = None) -> None:
    """Write `path` (.safetensors, the model config, sample rate and the stage hash that made it in its
    metadata) and `path`.json (the same description, for people and tools), each atomically.
    Refuses weights with NaN/Inf values (a diverged model must never look like a result)."""
    from safetensors.torch import save_file

    path = Path(path)
    description = saved_description(model, stage_hash)
    state = {key: tensor.detach().contiguous().cpu() for key, tensor in model.state_dict().items()}
    check_finite_weights(state, f"weights for {path}")
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={"pipeline": json.dumps(description, sort_keys=True)})
    write_json_atomic(path.with_suffix(".json"), description)


def saved_description(model: Autoencoder, stage_hash: str | None = None) -> dict[str, Any]:
    description = {
        "format": SAVED_FORMAT,
        "version": SAVED_VERSION,
        "sample_rate": model.sample_rate,
        "model": model.config.model_dump(mode="json"),
    }
    if stage_hash is not None:
        description["stage_hash"] = stage_hash
    return description


class NonFiniteWeights(UserFacingError):
    """Weights holding NaN/Inf: the model diverged."""


def check_finite_weights(state: Mapping[str, torch.Tensor], what: str) -> None:
    """NonFiniteWeights naming the tensors that hold NaN/Inf values."""
    bad = [
        key for key, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteWeights(f"{what}: {len(bad)} tensor(s) hold NaN/Inf values ({shown}); the model diverged")


def read_saved_description(path: str | Path) -> dict[str, Any] | None:
    """The description stored by `save_autoencoder`, or None for any other file (e.g. stable-audio-tools')."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "pipeline" not in metadata:
        return None
    description = json.loads(metadata["pipeline"])
    if description.get("format") != SAVED_FORMAT or description.get("version") != SAVED_VERSION:
        raise CheckpointMismatch(
            f"{path}: format {description.get('format')!r} version {description.get('version')!r} is not "
            f"{SAVED_FORMAT!r} version {SAVED_VERSION}"
        )
    return description


def load_saved(path: str | Path) -> Autoencoder:
    """Rebuild an autoencoder written by `save_autoencoder` from that file alone."""
    from pipeline.models.autoencoder.config import AutoencoderModelConfig
    from pipeline.models.autoencoder.model import Autoencoder

    description = read_saved_description(path)
    if description is None:
        raise CheckpointMismatch(f"{path}: not written by this project (no '{SAVED_FORMAT}' metadata)")
    model = Autoencoder(AutoencoderModelConfig.model_validate(description["model"]), description["sample_rate"])
    load_strict(model, read_state_dict(path), source=str(path))
    return model.eval()


def load_autoencoder(
    config: AutoencoderModelConfig, sample_rate: int, path: str | Path, strip_prefix: str | None = None
) -> Autoencoder:
    """Build `config` and load `path` strictly: our own format (its stored config must equal `config`)
    or a stable-audio-tools checkpoint. Returns the model in eval mode."""
    from pipeline.models.autoencoder.model import Autoencoder

    if not config.trainable:  # a whole autoencoder (import, encodec, dac) loads into its own module
        from pipeline.models.autoencoder.whole import WholeAutoencoder

        whole = WholeAutoencoder(config, sample_rate)
        whole.load_weights(Path(path), strip_prefix)
        return whole.eval()
    description = read_saved_description(path)
    if description is not None:
        differences = config_differences(description["model"], config.model_dump(mode="json"))
        if description["sample_rate"] != sample_rate:
            differences.append(f"sample_rate: file {description['sample_rate']}, experiment {sample_rate}")
        if differences:
            raise CheckpointMismatch(
                f"{path} was saved with another autoencoder config:\n  " + "\n  ".join(differences)
            )
    model = Autoencoder(config, sample_rate)
    tensors = read_state_dict(path)
    prefix = wrapper_prefix(tensors) if strip_prefix is None else None
    if prefix is not None:
        raise CheckpointMismatch(
            f"{path}: every key starts with {prefix!r} (the autoencoder inside a wrapper): set "
            f"`autoencoder.checkpoint_prefix: {prefix!r}` to load it"
        )
    state = normalise_keys(tensors, [strip_prefix] if strip_prefix else [])
    load_strict(model, state, source=str(path))
    check_finite_weights(state, str(path))
    return model.eval()


def config_differences(saved: Any, wanted: Any, where: str = "model") -> list[str]:
    """Dotted paths at which two plain configs differ, with both values."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [
            difference
            for key in sorted(set(saved) | set(wanted))
            for difference in config_differences(saved.get(key), wanted.get(key), f"{where}.{key}")
        ]
    return [] if saved == wanted else [f"{where}: file {saved!r}, experiment {wanted!r}"]
