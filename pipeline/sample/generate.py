"""`pipeline sample EXP`: the exported model + the frozen autoencoder -> WAV files under `samples/`.

File i's randomness comes from (seed, i) alone: a diffusion model's noise, an LM's uniform draws (one
per code, deciding it by inverse CDF). The same seed and batch size give byte-identical files (on one
machine and software stack), and another batch size gives the same audio up to float32 rounding (the
kernels round differently at other batch shapes: measured on CPU, at most 1 of the 16 bits on a few
samples in ten thousand; an LM's code can flip where a draw falls on a rounding boundary), so
`batch_size` stays out of the stage hash. Diffusion latents are de-normalised with the statistics the
model was trained with (recorded in model.json); LM codes are de-interleaved by the model. Either is
decoded, trimmed to the requested seconds and written as 16-bit WAV at the autoencoder's rate and
channel count; `samples.json` (written last: the stage's declared output) records the settings, the
model's stage hash and each file's sha256."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from pipeline.audio.io import write_audio
from pipeline.autoencoder import current_weights_sha256, experiment_autoencoder
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.config.registry import build
from pipeline.config.training import SampleConfig
from pipeline.errors import UserFacingError
from pipeline.latents.dataset import LatentStats, denormalise
from pipeline.layout import layout_of
from pipeline.models.autoencoder.checkpoints import load_strict
from pipeline.utils.atomic import atomic_path, sha256_file, write_json_atomic
from pipeline.utils.devices import pick_device

NOISE_TAG = 0x6E6F6973  # the per-file noise seed: (seed, file number, tag)
DRAW_TAG = 0x64726177  # the per-file draws of an LM: (seed, file number, tag)
# What each family's model is built with, as model.json records it.
BUILD_ARGUMENTS = {"diffusion": ("io_channels",), "lm": ("n_codebooks", "codebook_size")}


@dataclass
class Samples:
    directory: Path
    files: list[Path]


def sample_stage(experiment: Experiment, settings: SampleConfig, progress: bool = True) -> Samples:
    """Generate `settings.count` files with the experiment's exported model."""
    layout = layout_of(experiment)
    description = exported_description(experiment)
    family = description.get("family", "diffusion")
    if family == "diffusion":
        check_sampler(settings.sampler)
    elif settings.sampler is not None:
        raise UserFacingError(f"sample.sampler '{settings.sampler}' is a diffusion sampler; an LM draws codes")
    device = pick_device(settings.device)
    model = load_exported(description, layout.exported_model).to(device).eval()
    values = conditioning_values(model, settings)
    autoencoder = experiment_autoencoder(experiment).to(device).eval()
    frames = latent_frames(settings.seconds, description["latent_rate"], model)
    samples = round(settings.seconds * autoencoder.sample_rate)
    generate = generate_codes if family == "lm" else generate_latents
    layout.samples_settings.unlink(missing_ok=True)  # the files change from here on: no record describes them
    files: list[Path] = []
    numbers = list(range(settings.count))
    bar = tqdm(total=settings.count, desc="sample", unit="file", disable=not progress)
    for start in range(0, settings.count, settings.batch_size):
        batch = numbers[start : start + settings.batch_size]
        batch_values = {name: value * len(batch) for name, value in values.items()}
        with torch.no_grad():
            decodable = generate(model, description, settings, batch, batch_values, frames, device)
            decoded = autoencoder.decode(decodable)
            if decoded.shape[-1] < samples:
                raise RuntimeError(
                    f"{frames} latent frames decoded to {decoded.shape[-1]} samples, fewer than {samples}"
                )
            audio = decoded[..., :samples].clamp(-1.0, 1.0).cpu().numpy()
        for number, waveform in zip(batch, audio):
            path = layout.sample_wav(number)
            with atomic_path(path) as temporary:
                write_audio(temporary, waveform.T, autoencoder.sample_rate, "WAV", "PCM_16")
            files.append(path)
        bar.update(len(batch))
    bar.close()
    _remove_other_samples(layout.samples_dir, files)
    write_json_atomic(layout.samples_settings, _record(experiment, settings, description, files, autoencoder))
    return Samples(layout.samples_dir, files)


def generate_latents(
    model: Any,
    description: dict[str, Any],
    settings: SampleConfig,
    numbers: list[int],
    values: dict[str, list],
    frames: int,
    device: torch.device,
) -> torch.Tensor:
    """A diffusion model's de-normalised latents (B, C, frames) for files `numbers`."""
    noise = torch.stack([file_noise(settings.seed, number, description["io_channels"], frames) for number in numbers])
    latents = model.generate(
        noise.to(device), values, steps=settings.steps, cfg_scale=settings.cfg_scale, sampler=settings.sampler
    )
    stats = LatentStats(np.asarray(description["latent_mean"]), np.asarray(description["latent_std"]), 0)
    return denormalise(latents.float(), stats, description["normalise"])


def generate_codes(
    model: Any,
    description: dict[str, Any],
    settings: SampleConfig,
    numbers: list[int],
    values: dict[str, list],
    frames: int,
    device: torch.device,
) -> torch.Tensor:
    """An LM's codes (B, n_codebooks, frames) for files `numbers`, decoded with the key/value cache."""
    from pipeline.models.lm.patterns import sequence_length

    n_codebooks = description["n_codebooks"]
    length = sequence_length(model.config.pattern, n_codebooks, frames)
    uniforms = torch.stack([file_draws(settings.seed, number, length, n_codebooks) for number in numbers])
    return model.generate(
        values,
        frames,
        uniforms.to(device),
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        cfg_scale=settings.cfg_scale,
    )


def latent_frames(seconds: float, latent_rate: float, model: Any) -> int:
    """Frames covering `seconds`, rounded up to whole backbone patches (a DiT's patch_size)."""
    patch = int(getattr(getattr(model.config, "backbone", None), "patch_size", 1))
    frames = max(1, math.ceil(seconds * latent_rate))
    return -(-frames // patch) * patch


def check_sampler(sampler: str | None) -> None:
    from pipeline.models.diffusion.samplers import SAMPLERS

    if sampler is not None and sampler not in SAMPLERS:
        raise UserFacingError(f"sample.sampler '{sampler}' is not one of {', '.join(SAMPLERS)}")


def exported_description(experiment: Experiment) -> dict[str, Any]:
    """model.json of the exported model, after checking it was trained with this experiment's settings
    and on latents of its current autoencoder weights."""
    layout = layout_of(experiment)
    if not layout.exported_model.is_file() or not layout.exported_description.is_file():
        raise UserFacingError(
            f"no exported model at {layout.exported_model}: run `pipeline train EXP` (or `snakemake train`) first"
        )
    description = json.loads(layout.exported_description.read_text(encoding="utf-8"))
    wanted = stage_hash(experiment, "train")
    if description.get("stage_hash") != wanted:
        raise UserFacingError(
            f"{layout.exported_model} was trained with train stage hash {description.get('stage_hash')}, but this "
            f"experiment's is {wanted}: the model is stale; run `pipeline train EXP` to train the configured one"
        )
    trained_on, current = description.get("autoencoder_weights_sha256"), current_weights_sha256(experiment)
    if trained_on is not None and trained_on != current:
        raise UserFacingError(
            f"{layout.exported_model} was trained on the latents of other autoencoder weights (sha256 {trained_on}) "
            f"than the experiment's (sha256 {current}): the model is stale; re-encode the stores "
            "(`snakemake pre_encode`) and run `pipeline train EXP` again"
        )
    return description


def load_exported(description: dict[str, Any], weights: Path) -> torch.nn.Module:
    """Rebuild the model from its recorded config and load the weights strictly."""
    from pipeline.config.training import TrainConfig

    model_config = TrainConfig.model_fields["model"].annotation  # the discriminated union of models
    from pydantic import TypeAdapter

    config = TypeAdapter(model_config).validate_python(description["model"])
    arguments = BUILD_ARGUMENTS[description.get("family", "diffusion")]
    model = build("model", config, **{name: description[name] for name in arguments})
    load_strict(model, load_file(str(weights)), source=str(weights))
    return model


def conditioning_values(model: Any, settings: SampleConfig) -> dict[str, list]:
    """One value per conditioner id (a list of one, repeated per batch): the settings' value, else
    seconds_start = 0 and seconds_total = the requested seconds, else None (the null / unknown entry).
    A value the conditioner cannot take (a label not in its list, a number that is not one) is an error."""
    known = {conditioner.id for conditioner in model.config.conditioners}
    unknown = sorted(set(settings.conditioning) - known)
    if unknown:
        raise UserFacingError(
            f"sample.conditioning names {', '.join(unknown)}, which the model has no conditioner for; "
            f"its conditioners: {', '.join(sorted(known)) or 'none'}"
        )
    defaults = {"seconds_start": 0.0, "seconds_total": settings.seconds}
    values = {}
    for conditioner in model.config.conditioners:
        field = conditioner.field or conditioner.id
        value = settings.conditioning.get(conditioner.id, defaults.get(field))
        _check_value(conditioner, value)
        values[conditioner.id] = [value]
    return values


def _check_value(conditioner: Any, value: Any) -> None:
    if value is None:
        return
    where = f"sample.conditioning.{conditioner.id}"
    labels = getattr(conditioner, "values", None)
    if conditioner.type == "label" and value not in (labels or ()):
        raise UserFacingError(f"{where}: {value!r} is not one of the model's labels: {', '.join(labels or ())}")
    if conditioner.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserFacingError(f"{where}: {value!r} is not a finite number")


def file_noise(seed: int, number: int, channels: int, frames: int) -> torch.Tensor:
    rng = np.random.default_rng([seed, number, NOISE_TAG])
    return torch.from_numpy(rng.standard_normal((channels, frames), dtype=np.float32))


def file_draws(seed: int, number: int, length: int, n_codebooks: int) -> torch.Tensor:
    """(length, n_codebooks) uniforms in [0, 1): one per code an LM draws for file `number`."""
    rng = np.random.default_rng([seed, number, DRAW_TAG])
    return torch.from_numpy(rng.random((length, n_codebooks), dtype=np.float32))


def _remove_other_samples(directory: Path, kept: list[Path]) -> None:
    """Files of an earlier run with a larger count would otherwise look like part of this one."""
    for old in directory.glob("sample-*.wav"):
        if old not in kept:
            old.unlink()


def _record(
    experiment: Experiment, settings: SampleConfig, description: dict[str, Any], files: list[Path], autoencoder: Any
) -> dict[str, Any]:
    effective = experiment.model_copy(update={"sample": settings})  # with the command line's flags
    return {
        "settings": settings.model_dump(mode="json"),
        "model_stage_hash": description["stage_hash"],
        "sample_stage_hash": stage_hash(effective, "sample"),
        "sample_rate": autoencoder.sample_rate,
        "channels": autoencoder.io_channels,
        "files": [{"path": path.name, "sha256": sha256_file(path)} for path in files],
    }
