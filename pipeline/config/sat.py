"""`pipeline import-sat`: a stable-audio-tools model config -> this project's `autoencoder` section
(and, for a `diffusion_cond` / `diffusion_uncond` config, its `train` section: `sat_diffusion.py`).

Takes an autoencoder model config (`model_type: autoencoder`) or the `pretransform` block of a
diffusion / LM config. A diffusion config is converted whole or refused with every unsupported part
named at once; given its checkpoint, the autoencoder loads from that file (`pretransform.model.`)
and the model starts from it (`train.init_from`). Component configs map one to one (our components are named and parameterised
like stable-audio-tools'); values stable-audio-tools types twice (`latent_dim`, `downsampling_ratio`,
`io_channels`) are checked against the ones we derive and then dropped. Training settings we support
(AdamW, L1 + multi-resolution STFT, KL weight) are carried over; the rest is listed as not carried."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config.registry import registered
from pipeline.config.sat_diffusion import DIFFUSION_MODEL_TYPES, diffusion_train_section
from pipeline.config.sat_imports import SAT_IMPORTS, install_hint, sat_import_block, sat_import_notes
from pipeline.errors import UserFacingError
from pipeline.models.autoencoder.config import AutoencoderModelConfig

# Keys stable-audio-tools puts beside `type`/`config` that say nothing about the architecture.
IGNORED_COMPONENT_KEYS = {"requires_grad"}
# Bottleneck keys that repeat the latent width, which we derive from the decoder.
DERIVED_BOTTLENECK_KEYS = {"dim"}


class SatImportError(UserFacingError):
    """The stable-audio-tools config cannot be expressed here; the message says what and why."""


PRETRANSFORM_PREFIX = "pretransform.model."  # the autoencoder's keys in a diffusion checkpoint


def import_sat_config(
    path: str | Path, checkpoint: str | None = None, checkpoint_prefix: str | None = None, t5_dir: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Return ({"data": ..., "autoencoder": ..., ["train": ...]}, notes on what was not carried over or
    is still to set). `t5_dir`: the local T5 directory of a config with a `t5` conditioner."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SatImportError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise SatImportError(f"{path}: not a readable JSON file ({error})") from error
    if isinstance(document, dict) and document.get("model_type") in DIFFUSION_MODEL_TYPES:
        return _import_diffusion(document, path, checkpoint, checkpoint_prefix, t5_dir)
    return _import_autoencoder(document, path, checkpoint, checkpoint_prefix)


def _import_diffusion(
    document: dict[str, Any], path: Path, checkpoint: str | None, prefix: str | None, t5_dir: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Both halves, every problem of either reported together."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    notes: list[str] = []
    if not isinstance(document.get("model"), dict):
        raise SatImportError(f"{path}: expected a stable-audio-tools model config with a 'model' object")
    if checkpoint is not None and prefix is None:
        prefix = PRETRANSFORM_PREFIX
    try:
        sections, notes = _import_autoencoder(document, path, checkpoint, prefix)
    except SatImportError as error:
        problems += [line.strip() for line in str(error).removeprefix(f"{path}: ").splitlines() if line.strip()]
    encoder = sections.get("autoencoder", {}).get("model", {}).get("encoder", {})
    ratio = encoder.get("downsampling_ratio") or math.prod(encoder.get("strides") or [0])
    frames = None
    if ratio and isinstance(document.get("sample_size"), int):
        frames = document["sample_size"] // ratio
    train, train_notes, train_problems = diffusion_train_section(document, frames, checkpoint, t5_dir)
    problems += train_problems
    if problems:
        raise SatImportError(
            f"{path}: cannot import this {document['model_type']} config ({len(problems)} problem(s)):\n  "
            + "\n  ".join(problems)
        )
    return {**sections, "train": train}, notes + train_notes


def _import_autoencoder(
    document: Any, path: Path, checkpoint: str | None, checkpoint_prefix: str | None
) -> tuple[dict[str, Any], list[str]]:
    block, sample_rate, training = _autoencoder_block(document, path)
    model, problems = {}, []
    for part in ("encoder", "decoder", "bottleneck"):  # every unsupported component, not just the first
        try:
            model[part] = _component(part, block.get(part), path)
        except SatImportError as error:
            problems.append(str(error).removeprefix(f"{path}: "))
    if problems:
        raise SatImportError(f"{path}: " + "\n  ".join(problems))
    _check_repeated_values(block, model, path)
    import_notes = _validate(model, path)
    section: dict[str, Any] = {"sample_rate": sample_rate, "model": model}
    notes: list[str] = list(import_notes) + sat_import_notes(model)
    if checkpoint is not None:
        section["checkpoint"] = checkpoint
        if checkpoint_prefix is not None:
            section["checkpoint_prefix"] = checkpoint_prefix
    if training is not None and checkpoint is not None:
        notes.append("training settings not carried over: with autoencoder.checkpoint set, the model is not trained")
    elif training is not None:
        section["training"], training_notes = _training(training, document, sample_rate, model["bottleneck"]["type"])
        notes += training_notes
    elif checkpoint is None:
        notes.append("no training settings in the source: set autoencoder.checkpoint to the pretrained weights")
    return {
        "data": {"sample_rate": sample_rate, "channels": model["encoder"].get("in_channels", 2)},
        "autoencoder": section,
    }, notes


def _validate(model: dict[str, Any], path: Path) -> list[str]:
    """Validate the converted model; a `type: import` class that is not importable here is a note (it
    is checked when the experiment is validated where that package is installed), not a failure."""
    try:
        AutoencoderModelConfig.model_validate(model)
    except ValidationError as error:
        notes, problems = [], []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            if item["loc"][-1:] == ("target",) and "cannot import" in item["msg"]:
                target = model[item["loc"][0]]["target"]
                notes.append(f"{target} is not importable here: {install_hint(target)}")
            else:
                problems.append(f"model.{where}: {item['msg']}")
        if problems:
            raise SatImportError(
                f"{path}: the converted config does not validate:\n  " + "\n  ".join(problems)
            ) from None
        return sorted(set(notes))
    return []


def _autoencoder_block(document: Any, path: Path) -> tuple[dict[str, Any], int, dict[str, Any] | None]:
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise SatImportError(f"{path}: expected a stable-audio-tools model config with a 'model' object")
    sample_rate = document.get("sample_rate")
    if not isinstance(sample_rate, int):
        raise SatImportError(f"{path}: 'sample_rate' must be an integer, got {sample_rate!r}")
    model_type = document.get("model_type")
    if model_type == "autoencoder":
        return document["model"], sample_rate, document.get("training")
    pretransform = document["model"].get("pretransform")
    if pretransform is None:
        raise SatImportError(
            f"{path}: model_type '{model_type}' has no model.pretransform; give an autoencoder config or a "
            "diffusion/LM config whose pretransform is an autoencoder"
        )
    if pretransform.get("type") != "autoencoder":
        raise SatImportError(
            f"{path}: model.pretransform.type '{pretransform.get('type')}' is not supported; supported: autoencoder"
        )
    return pretransform.get("config", {}), sample_rate, None


def _component(part: str, entry: Any, path: Path) -> dict[str, Any]:
    kind = part
    if not isinstance(entry, dict) or "type" not in entry:
        raise SatImportError(f"{path}: model.{part} must be an object with a 'type'")
    unknown = set(entry) - {"type", "config"} - IGNORED_COMPONENT_KEYS
    if unknown:
        raise SatImportError(f"{path}: model.{part} has keys this importer does not know: {sorted(unknown)}")
    mapped = sat_import_block(part, entry["type"], dict(entry.get("config", {})))
    if mapped is not None:
        return mapped
    supported = sorted(registered(kind))
    if entry["type"] not in supported:
        imported = sorted(sat for role, sat in SAT_IMPORTS if role == part)
        raise SatImportError(
            f"{path}: {part} type '{entry['type']}' is not supported yet; supported {part} types: {', '.join(supported)} "
            f"(and, as type: import of stable-audio-tools' own classes, {', '.join(imported) or 'none'})"
        )
    config = dict(entry.get("config", {}))
    if part == "bottleneck":
        config = {key: value for key, value in config.items() if key not in DERIVED_BOTTLENECK_KEYS}
    return {"type": entry["type"], **config}


def _check_repeated_values(block: dict[str, Any], model: dict[str, Any], path: Path) -> None:
    """stable-audio-tools types latent_dim, downsampling_ratio and io_channels a second time: they must agree."""
    encoder = model["encoder"]
    derived = {
        "latent_dim": model["decoder"].get("latent_dim"),
        "downsampling_ratio": encoder.get("downsampling_ratio") or math.prod(encoder.get("strides", [])) or None,
        "io_channels": encoder.get("in_channels"),
    }
    for key, ours in derived.items():
        if key in block and ours is not None and block[key] != ours:
            raise SatImportError(f"{path}: model.{key} is {block[key]} but the encoder/decoder configs give {ours}")
    bottleneck_dim = block.get("bottleneck", {}).get("config", {}).get("dim")
    if bottleneck_dim is not None and bottleneck_dim != derived["latent_dim"]:
        raise SatImportError(
            f"{path}: model.bottleneck.config.dim is {bottleneck_dim}, decoder.latent_dim {derived['latent_dim']}"
        )


def _training(
    training: dict[str, Any], document: dict[str, Any], sample_rate: int, bottleneck: str
) -> tuple[dict[str, Any], list[str]]:
    optimizer = training.get("optimizer_configs", {}).get("autoencoder", {}).get("optimizer", {})
    optimizer_config = optimizer.get("config", {})
    losses = training.get("loss_configs", {})
    spectral = losses.get("spectral", {})
    result: dict[str, Any] = {
        "learning_rate": optimizer_config.get("lr", training.get("learning_rate", 1e-4)),
        "kl_weight": losses.get("bottleneck", {}).get("weights", {}).get("kl", 0.0),
        "l1_weight": losses.get("time", {}).get("weights", {}).get("l1", 0.0),
        "stft_weight": spectral.get("weights", {}).get("mrstft", 0.0),
        "mel_weight": 0.0,
    }
    for ours, theirs in (("betas", "betas"), ("weight_decay", "weight_decay")):
        if theirs in optimizer_config:
            result[ours] = optimizer_config[theirs]
    if "fft_sizes" in spectral.get("config", {}):
        result["stft_fft_sizes"] = spectral["config"]["fft_sizes"]
    if isinstance(document.get("sample_size"), int):
        result["crop_seconds"] = document["sample_size"] / sample_rate
    notes = []
    if optimizer and optimizer.get("type", "AdamW") != "AdamW":
        notes.append(f"optimizer {optimizer.get('type')} (AdamW is used)")
    if "discriminator" in losses:
        notes.append("adversarial discriminator and feature-matching losses (not implemented)")
    if training.get("use_ema"):
        notes.append("EMA of the weights")
    if "scheduler" in training.get("optimizer_configs", {}).get("autoencoder", {}):
        notes.append("learning-rate scheduler (constant rate is used)")
    if spectral.get("config", {}).get("perceptual_weighting"):
        notes.append("perceptual weighting of the STFT loss")
    if bottleneck == "vae" and "bottleneck" not in losses:
        notes.append("no KL weight in the source: kl_weight set to 0.0, choose one")
    return result, notes
