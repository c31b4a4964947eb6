"""The top-level `Experiment` and `load_experiment`: file -> extends -> overrides -> validated, frozen."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from pipeline.config.base import StrictModel, check_fields
from pipeline.config.errors import ConfigError, ConfigProblem
from pipeline.config.loader import Document, load_document
from pipeline.config.sections import AutoencoderConfig, DataConfig, PathsConfig, PreEncodeConfig, ResourcesConfig
from pipeline.config.training import SampleConfig, TrainConfig
from pipeline.config.validation import problems_from_validation_error

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MIN_LATENT_FRAMES = 4  # latent frames in the longest item (max_item_seconds) when an autoencoder is set


class Experiment(StrictModel):
    """One experiment: every stage reads its settings from here.

    Optional sections switch stages on: `autoencoder` (pre-encoding), `train` (training and sampling)."""

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=128,
        description="letters, digits, '_', '.', '-'; starts with a letter or digit",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of every random choice in every stage")
    paths: PathsConfig
    data: DataConfig = Field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig | None = Field(
        None, description="the frozen autoencoder pre-encoding runs and sampling decodes with"
    )
    pre_encode: PreEncodeConfig = Field(default_factory=PreEncodeConfig)
    train: TrainConfig | None = Field(
        None, description="the model trained on the latent stores; null: stop at pre_encode"
    )
    sample: SampleConfig = Field(default_factory=SampleConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_work_dir(cls, raw: Any) -> Any:
        """work_dir defaults to results/<name> (resolved like any other relative path)."""
        if isinstance(raw, dict) and isinstance(raw.get("paths"), dict) and isinstance(raw.get("name"), str):
            if raw["paths"].get("work_dir") is None:
                raw = {**raw, "paths": {**raw["paths"], "work_dir": f"results/{raw['name']}"}}
        return raw

    @model_validator(mode="after")
    def _train_fits_autoencoder(self) -> Experiment:
        """The model's geometry against the autoencoder's latents: at validation, never a shape error at step 0."""
        if self.train is None:
            return self
        if self.autoencoder is None:
            check_fields(self, [(("train",), "needs an autoencoder section: training reads the latents it encodes")])
        assert self.autoencoder is not None
        model = self.train.model
        problems = [
            (("train", "model", *loc), message) for loc, message in model.autoencoder_problems(self.autoencoder.model)
        ]
        problems += [(("sample", *loc), message) for loc, message in model.sample_problems(self.sample)]
        check_fields(self, problems)
        return self

    @model_validator(mode="after")
    def _autoencoder_fits_data(self) -> Experiment:
        if self.autoencoder is None:
            return self
        model, channels, rate = self.autoencoder.model, self.data.channels, self.data.sample_rate
        problems = [(("autoencoder", "model", *loc), message) for loc, message in model.data_problems(channels, rate)]
        if self.autoencoder.sample_rate is not None and self.autoencoder.sample_rate != rate:
            problems.append(
                (
                    ("autoencoder", "sample_rate"),
                    f"must equal data.sample_rate ({rate}), got {self.autoencoder.sample_rate}",
                )
            )
        window_samples = self.pre_encode.window_seconds * rate
        if window_samples < model.downsampling_ratio:
            problems.append(
                (
                    ("pre_encode", "window_seconds"),
                    f"{self.pre_encode.window_seconds} s is shorter than one latent frame ({model.downsampling_ratio} samples at {rate} Hz)",
                )
            )
        training = self.autoencoder.training
        if training is not None and training.crop_seconds * rate < model.downsampling_ratio:
            problems.append(
                (
                    ("autoencoder", "training", "crop_seconds"),
                    f"{training.crop_seconds} s is shorter than one latent frame ({model.downsampling_ratio} samples at {rate} Hz)",
                )
            )
        problems += self._items_hold_latent_frames() + self._scale_needs_a_vae()
        check_fields(self, problems)
        return self

    def _items_hold_latent_frames(self) -> list[tuple[tuple[str, ...], str]]:
        """A segment of max_item_seconds must hold MIN_LATENT_FRAMES latent frames: shorter ones encode to
        next to nothing and multiply the items of the plan."""
        assert self.autoencoder is not None
        longest, ratio = self.data.max_item_seconds, self.autoencoder.model.downsampling_ratio
        if longest is None or longest * self.data.sample_rate >= MIN_LATENT_FRAMES * ratio:
            return []
        shortest = MIN_LATENT_FRAMES * ratio / self.data.sample_rate
        return [
            (
                ("data", "max_item_seconds"),
                (
                    f"must be at least {shortest:g} s ({MIN_LATENT_FRAMES} latent frames of {ratio} samples at "
                    f"{self.data.sample_rate} Hz), got {longest:g}"
                ),
            )
        ]

    def _scale_needs_a_vae(self) -> list[tuple[tuple[str, ...], str]]:
        assert self.autoencoder is not None
        bottleneck = self.autoencoder.model.bottleneck.type
        if not self.pre_encode.store_scale or bottleneck == "vae":
            return []
        return [
            (
                ("pre_encode", "store_scale"),
                (
                    f"true, but the {bottleneck} bottleneck has no posterior scale to store (only a vae has); set it to false"
                ),
            )
        ]

    @property
    def work_dir(self) -> Path:
        assert self.paths.work_dir is not None  # set by _default_work_dir
        return self.paths.work_dir


def load_experiment(path: str | Path, overrides: Iterable[str] = (), base_dir: str | Path | None = None) -> Experiment:
    """Load, merge, override and validate an experiment; raise ConfigError listing every problem.

    Relative paths in `paths` are resolved against `base_dir` (default: the current directory)."""
    document = load_document(path, overrides)
    return validate_document(document, base_dir)


def validate_document(document: Document, base_dir: str | Path | None = None) -> Experiment:
    problems = list(document.problems)
    experiment = None
    context = {"base_dir": Path(base_dir) if base_dir is not None else Path.cwd()}
    try:
        experiment = Experiment.model_validate(document.data, context=context)
    except ValidationError as error:
        problems.extend(problems_from_validation_error(error, Experiment, document, document.incomplete))
    except (ValueError, TypeError, OverflowError, RecursionError) as error:  # a validator's own failure
        problems.append(ConfigProblem("", f"cannot validate: {error}", document.origin_of(())))
    if problems or experiment is None:
        raise ConfigError(_dedupe(problems), document.source)
    return experiment


def _dedupe(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return list(dict.fromkeys(problems))


def to_plain(experiment: Experiment) -> dict[str, Any]:
    """The resolved experiment as plain YAML/JSON-able data (paths as strings, every default written)."""
    return experiment.model_dump(mode="json")
