"""Sections of the experiment: paths, data, autoencoder, resources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.config.base import StrictModel, check_fields
from pipeline.config.registry import component_union, discover
from pipeline.config.stages import RUNTIME_ONLY, STAGES
from pipeline.config.types import ByteSize, ResolvedPath
from pipeline.models.autoencoder.config import AutoencoderModel

discover()  # registered configs must exist before the unions below are built (imports no component)

MIN_ITEM_SECONDS = 0.05  # shortest max_item_seconds: shorter segments are noise and multiply the plan


def is_within(inner: Path, outer: Path) -> bool:
    """Whether `inner` is `outer` or below it, as written and with symbolic links resolved."""
    pairs = [(inner, outer), (Path(os.path.realpath(inner)), Path(os.path.realpath(outer)))]
    return any(a == b or b in a.parents for a, b in pairs)


class PathsConfig(StrictModel):
    audio_dir: ResolvedPath = Field(description="folder of input audio, searched recursively")
    work_dir: ResolvedPath | None = Field(
        None, description="where every stage writes its outputs; default results/<name>; not inside audio_dir"
    )

    @model_validator(mode="after")
    def _work_dir_outside_audio_dir(self) -> PathsConfig:
        if self.work_dir is not None and is_within(self.work_dir, self.audio_dir):
            check_fields(
                self,
                [
                    (
                        ("work_dir",),
                        (
                            f"{self.work_dir} is inside audio_dir ({self.audio_dir}): the audio of the shards written there "
                            "would be listed as input by the next plan; put work_dir elsewhere"
                        ),
                    )
                ],
            )
        return self


class ShardBudget(StrictModel):
    """A shard closes when either budget would be exceeded (measured on the encoded output audio)."""

    max_items: int = Field(1000, ge=1, le=10_000_000, description="items per shard")
    max_bytes: ByteSize = Field(1_000_000_000, ge=1024, le=2**50, description="encoded audio bytes per shard")


class DataConfig(StrictModel):
    sample_rate: int = Field(44100, ge=1000, le=768_000, description="Hz; every item is resampled to it")
    channels: Literal[1, 2] = Field(2, description="output channels: mono is duplicated / stereo downmixed to fit")
    multichannel: Literal["downmix", "reject"] = Field(
        "downmix", description="what to do with sources of more than 2 channels"
    )
    extensions: tuple[str, ...] = Field(
        (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"),
        min_length=1,
        description="file extensions treated as audio (case-insensitive)",
    )
    min_item_seconds: float = Field(0.5, ge=0.0, le=86_400.0, description="shorter items (and tails) are rejected")
    max_item_seconds: float | None = Field(
        None,
        ge=MIN_ITEM_SECONDS,
        le=86_400.0,
        description="longer items are handled per `long_items`; null: no limit",
    )
    long_items: Literal["split", "truncate", "reject"] = Field(
        "split", description="items over max_item_seconds: split into segments, keep the start, or reject"
    )
    segment_overlap_seconds: float = Field(
        0.0, ge=0.0, le=86_400.0, description="overlap of consecutive segments; at most half of max_item_seconds"
    )
    shard: ShardBudget = Field(default_factory=ShardBudget)
    codec: component_union("codec") = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"type": "flac"}, validate_default=True, description="how shard audio is stored"
    )

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, extensions: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for extension in extensions:
            extension = extension.strip().lower()
            if not extension.lstrip("."):
                raise ValueError(f"empty file extension in {list(extensions)}")
            cleaned.append(extension if extension.startswith(".") else "." + extension)
        return tuple(sorted(set(cleaned)))

    @model_validator(mode="after")
    def _check_lengths(self) -> DataConfig:
        if self.max_item_seconds is not None:
            if self.min_item_seconds > self.max_item_seconds:
                raise ValueError(
                    f"min_item_seconds ({self.min_item_seconds}) must not exceed max_item_seconds "
                    f"({self.max_item_seconds})"
                )
            if self.segment_overlap_seconds > self.max_item_seconds / 2:
                check_fields(
                    self,
                    [
                        (
                            ("segment_overlap_seconds",),
                            (
                                f"must be at most half of max_item_seconds ({self.max_item_seconds / 2:g} s), got "
                                f"{self.segment_overlap_seconds:g}: segments start every max_item_seconds - overlap seconds, "
                                "so an overlap near the segment length makes a long file into a huge number of segments"
                            ),
                        )
                    ],
                )
        return self


Beta = Annotated[float, Field(ge=0.0, lt=1.0)]  # an Adam moment decay: 1 or more never forgets, and diverges


class AutoencoderTrainingConfig(StrictModel):
    """The train_autoencoder stage: random crops from the shards, L1 + multi-resolution STFT + mel losses."""

    steps: int = Field(10_000, ge=1, le=100_000_000)
    batch_size: int = Field(8, ge=1, le=65_536)
    crop_seconds: float = Field(1.0, gt=0.0, le=3600.0, description="length of each random training crop")
    learning_rate: float = Field(1e-4, gt=0.0, le=10.0)
    betas: tuple[Beta, Beta] = Field((0.8, 0.99), description="AdamW betas, each in [0, 1)")
    weight_decay: float = Field(1e-3, ge=0.0, le=10.0)
    grad_clip: float | None = Field(1.0, gt=0.0, description="max gradient norm; null: no clipping")
    kl_weight: float = Field(ge=0.0, le=1e6, description="weight of the VAE KL term (required: no hidden default)")
    l1_weight: float = Field(1.0, ge=0.0, le=1e6)
    stft_weight: float = Field(1.0, ge=0.0, le=1e6, description="multi-resolution STFT loss weight")
    stft_fft_sizes: tuple[int, ...] = Field((2048, 1024, 512, 256, 128, 64), min_length=1)
    mel_weight: float = Field(1.0, ge=0.0, le=1e6, description="log-mel L1 loss weight")
    n_mels: int = Field(64, ge=8, le=512)
    holdout_items: int = Field(8, ge=1, le=1_000_000, description="items kept out of training for evaluation")
    eval_every: Annotated[int, RUNTIME_ONLY] = Field(500, ge=1, description="steps between held-out evaluations")
    checkpoint_every: Annotated[int, RUNTIME_ONLY] = Field(500, ge=1, description="steps between resumable checkpoints")
    log_every: Annotated[int, RUNTIME_ONLY] = Field(50, ge=1, description="steps between metrics lines")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: Annotated[int, RUNTIME_ONLY] = Field(
        0, ge=0, le=256, description="DataLoader processes decoding shard audio"
    )

    @field_validator("stft_fft_sizes")
    @classmethod
    def _powers_of_two(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        bad = [size for size in sizes if size < 16 or size & (size - 1)]
        if bad:
            raise ValueError(f"STFT sizes must be powers of two >= 16, got {bad}")
        return sizes


class AutoencoderConfig(StrictModel):
    """The frozen autoencoder: a pretrained `checkpoint`, or trained by the train_autoencoder stage."""

    model: AutoencoderModel = Field(
        description="encoder/decoder/bottleneck (+ transform), or a whole autoencoder: type import | encodec | dac"
    )
    checkpoint: ResolvedPath | None = Field(
        None,
        description="pretrained weights: our format (.safetensors with its .json) or a stable-audio-tools "
        "autoencoder .ckpt/.safetensors; null: train one with `training`",
    )
    checkpoint_prefix: str | None = Field(
        None, description="key prefix to strip from the checkpoint, e.g. 'pretransform.model.'"
    )
    sample_rate: int | None = Field(
        None, ge=1000, le=768_000, description="rate the model was trained at; must equal data.sample_rate when set"
    )
    training: AutoencoderTrainingConfig | None = None

    @model_validator(mode="after")
    def _weights_come_from_somewhere(self) -> AutoencoderConfig:
        problems = self._whole_model_problems()
        if not self.model.trainable:
            pass
        elif self.checkpoint is None and self.training is None:
            problems.append(
                (("training",), "required when autoencoder.checkpoint is not set (the stage trains the model)")
            )
        if self.checkpoint is not None and self.training is not None:
            problems.append(
                (
                    ("training",),
                    (
                        "set together with autoencoder.checkpoint: it is ambiguous which weights are used; "
                        "remove `checkpoint` to train the model, or `training` to use the pretrained weights"
                    ),
                )
            )
        if self.checkpoint_prefix is not None and self.checkpoint is None:
            problems.append((("checkpoint_prefix",), "set, but autoencoder.checkpoint is not"))
        check_fields(self, problems)
        return self

    @property
    def pretrained_weights(self) -> Path | None:
        """The weights file the experiment brings: `checkpoint`, or a codec's own (model.path); None:
        the train_autoencoder stage makes them."""
        own = self.model.weights_file
        return own if own is not None else self.checkpoint

    def _whole_model_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """A whole autoencoder is not trained here; a codec brings its own weights."""
        model, problems = self.model, []
        if not model.trainable and self.training is not None:
            problems.append(
                (
                    ("training",),
                    f"the {model.type} autoencoder is not trained here (train_autoencoder trains encoder/decoder/bottleneck models); remove `training`",
                )
            )
        if model.weights_file is not None:
            if self.checkpoint is not None:
                problems.append(
                    (
                        ("checkpoint",),
                        f"the {model.type} model's weights come from autoencoder.model.path; remove `checkpoint`",
                    )
                )
        elif not model.trainable and self.checkpoint is None:
            problems.append(
                (("checkpoint",), f"required: the weights of the imported autoencoder {model.target}, loaded strictly")
            )
        return problems


class PreEncodeConfig(StrictModel):
    """The pre_encode stage: shard tars -> one HDF5 latent store per shard."""

    batch_size: int = Field(16, ge=1, le=65_536, description="items per encoder call (similar lengths grouped)")
    window_seconds: float = Field(
        30.0, gt=0.0, le=86_400.0, description="items longer than this are encoded alone, in windows of this length"
    )
    overlap_frames: int = Field(16, ge=0, le=4096, description="latent frames of context each side of a window")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    autocast: Literal["bf16", "fp16", "none"] = Field("bf16", description="mixed precision on GPU (CPU runs fp32)")
    store_scale: bool = Field(False, description="also store the VAE posterior scale (/latents_scale)")
    compression: Literal["none", "lzf", "gzip"] = Field("none", description="HDF5 compression of the latents")
    num_workers: Annotated[int | None, RUNTIME_ONLY] = Field(
        None,
        ge=0,
        le=1,
        description="1: decode shard audio in a background DataLoader process, 0: inline; "
        "null: 1 on GPU, 0 on CPU (where a second process only competes with the encoder)",
    )


def processes_per_node(gpus: int) -> int:
    """Training processes on each node: one per GPU, or one on a CPU-only node."""
    return max(gpus, 1)


class StageResources(StrictModel):
    """What one job of a stage asks the scheduler for (Snakemake resources / SLURM request)."""

    cpus: int = Field(1, ge=1, le=1024)
    mem_mb: int = Field(4000, ge=1, le=100_000_000)
    runtime: int = Field(60, ge=1, le=525_600, description="minutes")
    gpus: int = Field(0, ge=0, le=64, description="GPUs per node (train: one process per GPU)")
    nodes: int = Field(1, ge=1, le=4096, description="nodes for the job; train: one process per GPU on each")
    signal_seconds: int = Field(
        0,
        ge=0,
        le=86_400,
        description=(
            "SLURM signals the job (SIGUSR1) this many seconds before its time limit (--signal); training "
            "saves a checkpoint and stops, to resume in the next job; 0: no signal"
        ),
    )

    @model_validator(mode="after")
    def _signal_before_the_limit(self) -> StageResources:
        if self.signal_seconds and self.signal_seconds >= self.runtime * 60:
            check_fields(
                self,
                [
                    (
                        ("signal_seconds",),
                        f"must be below the job's runtime ({self.runtime} min = {self.runtime * 60} s), got "
                        f"{self.signal_seconds}: the signal would come before the job could do any work",
                    )
                ],
            )
        return self

    @property
    def processes_per_node(self) -> int:
        return processes_per_node(self.gpus)

    @property
    def processes(self) -> int:
        return self.nodes * self.processes_per_node


class PerShardStageResources(StageResources):
    """A stage with one unit of work per shard (shard, pre_encode). One job handles several shards, one
    after another, so that 10,000 shards are not 10,000 scheduler jobs and one Snakemake job each."""

    runtime: int = Field(60, ge=1, le=525_600, description="minutes per shard: a job of K shards asks for K x runtime")
    shards_per_job: int | Literal["auto"] = Field(
        "auto",
        description="shards one job handles, one after another; auto: 1, or as many as keep the stage within "
        "max_jobs jobs. Changing it after a run reruns the stage's jobs (each skips its up-to-date shards) and the index",
    )
    max_jobs: int = Field(500, ge=1, le=1_000_000, description="with shards_per_job: auto, the most jobs of this stage")

    @field_validator("shards_per_job")
    @classmethod
    def _at_least_one_shard(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1_000_000:
            raise ValueError(f"must be auto or a whole number from 1 to 1000000, got {value}")
        return value


def _stage_model(name: str, defaults: dict[str, int], per_shard: bool) -> type[StageResources]:
    """StageResources with this stage's defaults, so that setting one field (`resources.train: {mem_mb:
    8000}`) keeps the stage's own defaults for the others (gpus, cpus, ...), not the generic ones."""
    base = PerShardStageResources if per_shard else StageResources
    fields = {
        key: (int, FieldInfo.merge_field_infos(base.model_fields[key], default=value))
        for key, value in defaults.items()
    }
    title = "".join(part.capitalize() for part in name.split("_")) + "Resources"
    model = create_model(title, __base__=base, __module__=__name__, **fields)  # type: ignore[call-overload]
    globals()[title] = model  # a module attribute, so that pickle (worker processes) finds the class
    return model


def _stage_field(name: str, defaults: dict[str, int], per_shard: bool) -> tuple[type[StageResources], Any]:
    model = _stage_model(name, defaults, per_shard)
    what = f"one {name} job (several shards: shards_per_job)" if per_shard else f"one {name} job"
    return model, Field(default_factory=model, description=what)


# One field per stage, in stage order, defaults from the stage table.
ResourcesConfig = create_model(
    "ResourcesConfig",
    __base__=StrictModel,
    __module__=__name__,
    **{stage.name: _stage_field(stage.name, stage.resources, stage.per_shard) for stage in STAGES},
)
