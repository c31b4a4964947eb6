"""The `train` and `sample` sections: one training loop for every model family (`train.model.type`),
and how `pipeline sample` draws from the exported model. Torch-free: optimizer and scheduler names
are checked against lists of `torch.optim` names here; their `options` are checked against the
class's signature when the run starts, before step 0."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config.base import StrictModel, check_fields
from pipeline.config.registry import component_union, discover
from pipeline.config.stages import RUNTIME_ONLY
from pipeline.config.types import ResolvedPath

discover()  # the model configs register themselves on import

# torch.optim classes that step from gradients alone (LBFGS needs a closure, SparseAdam sparse grads).
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "Adafactor")
# torch.optim.lr_scheduler classes driven once per optimizer step; `constant` keeps the learning rate.
SCHEDULERS = ("constant", "CosineAnnealingLR", "LinearLR", "ExponentialLR", "StepLR", "MultiStepLR", "PolynomialLR")
OptionValue = float | int | bool | str | tuple[float | int, ...]


class OptimizerConfig(StrictModel):
    name: Literal[OPTIMIZERS] = Field("AdamW", description="a torch.optim class")  # type: ignore[valid-type]
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="peak learning rate (after warmup)")
    options: dict[str, OptionValue] = Field(
        default_factory=lambda: {"betas": (0.9, 0.999), "weight_decay": 1e-3},
        description="further keyword arguments of the optimizer class (betas, weight_decay, momentum ...)",
    )


class SchedulerConfig(StrictModel):
    name: Literal[SCHEDULERS] = Field(  # type: ignore[valid-type]
        "constant", description="a torch.optim.lr_scheduler class stepped once per optimizer step, or constant"
    )
    warmup_steps: int = Field(0, ge=0, le=100_000_000, description="linear warmup from 0 before the schedule")
    options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="keyword arguments of the scheduler (T_max defaults to steps - warmup_steps for cosine)",
    )


class EmaConfig(StrictModel):
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA weight of the old average per optimizer step")
    start_step: int = Field(0, ge=0, description="optimizer step from which the average is updated")


class TrainDataConfig(StrictModel):
    """What the model trains on: random crops of the latent stores (see docs/training.md)."""

    crop_frames: int = Field(256, ge=1, le=1_000_000, description="latent frames per training crop")
    normalise: Literal["none", "global", "per_channel"] = Field(
        "per_channel", description="scale latents by the stores' statistics: one mean/std, one per channel, or not"
    )
    posterior_sample: bool = Field(
        False,
        description="draw a fresh VAE posterior sample per step from /latents_scale (pre_encode.store_scale) "
        "instead of training on the posterior mean",
    )
    holdout_items: int = Field(4, ge=0, le=1_000_000, description="items of the last shard kept for the held-out loss")
    num_workers: Annotated[int, RUNTIME_ONLY] = Field(2, ge=0, le=256, description="DataLoader processes")
    prefetch_factor: Annotated[int, RUNTIME_ONLY] = Field(
        4, ge=1, le=1024, description="batches each worker reads ahead"
    )


class TrainConfig(StrictModel):
    """The train stage: one loop for every model family; resumable and preemption-safe."""

    model: component_union("model") = Field(description="what is trained; `type` picks the family")  # type: ignore[valid-type]
    init_from: ResolvedPath | None = Field(
        None,
        description="weights the model starts from, a fine-tune (fresh optimizer and schedule, step 0; unlike "
        "resuming a run): a stable-audio-tools diffusion checkpoint (.ckpt or .safetensors: its DiT and "
        "conditioners, loaded strictly) or a model.safetensors this pipeline exported; diffusion models only",
    )
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    steps: int = Field(100_000, ge=1, le=1_000_000_000, description="optimizer steps in total")
    batch_size: int = Field(
        32, ge=1, le=1_000_000, description="global batch per optimizer step (over every GPU and accumulation step)"
    )
    grad_accum: int = Field(1, ge=1, le=4096, description="micro-batches accumulated per optimizer step")
    grad_clip: float | None = Field(1.0, gt=0.0, description="max gradient norm; null: no clipping")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ema: EmaConfig | None = Field(default_factory=EmaConfig, description="exponential moving average; null: none")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    device: Annotated[Literal["auto", "cpu", "cuda"], RUNTIME_ONLY] = "auto"
    log_every: Annotated[int, RUNTIME_ONLY] = Field(50, ge=1, description="steps between metrics lines")
    eval_every: Annotated[int, RUNTIME_ONLY] = Field(1000, ge=1, description="steps between held-out losses")
    checkpoint_every: Annotated[int, RUNTIME_ONLY] = Field(1000, ge=1, description="steps between checkpoints")
    keep_checkpoints: Annotated[int, RUNTIME_ONLY] = Field(2, ge=1, le=1000, description="newest checkpoints kept")
    tensorboard: Annotated[bool, RUNTIME_ONLY] = Field(True, description="also log to TensorBoard when installed")

    @model_validator(mode="after")
    def _check_batches(self) -> TrainConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.init_from is not None and self.model.type != "diffusion":
            problems.append(
                (("init_from",), f"is supported for diffusion models, not train.model.type {self.model.type}")
            )
        if self.batch_size % self.grad_accum:
            problems.append(
                (("batch_size",), f"{self.batch_size} does not split into grad_accum ({self.grad_accum}) micro-batches")
            )
        if self.scheduler.warmup_steps >= self.steps:
            problems.append(
                (("scheduler", "warmup_steps"), f"{self.scheduler.warmup_steps} is not below steps ({self.steps})")
            )
        if self.ema is not None and self.ema.start_step >= self.steps:
            problems.append(
                (
                    ("ema", "start_step"),
                    f"{self.ema.start_step} is not below steps ({self.steps}): the average would never be updated "
                    "and the export would hold the initial weights",
                )
            )
        check_fields(self, problems)
        return self

    def micro_batch(self, world_size: int) -> int:
        """Items per rank per micro-step; ValueError when the global batch does not split evenly."""
        parts = self.grad_accum * world_size
        if self.batch_size % parts:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) does not split into {self.grad_accum} accumulation steps x "
                f"{world_size} processes; make it a multiple of {parts}"
            )
        return self.batch_size // parts


class SampleConfig(StrictModel):
    """`pipeline sample`: generate audio from the exported model (every field has a CLI flag)."""

    count: int = Field(4, ge=1, le=100_000, description="audio files to generate")
    seconds: float = Field(10.0, gt=0.0, le=86_400.0, description="duration of each file")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="noise seed: same seed, same audio")
    steps: int = Field(50, ge=1, le=10_000, description="sampler steps (diffusion)")
    sampler: str | None = Field(
        None, description="diffusion: euler/heun (rectified_flow), ddim/dpmpp_2m (v); null: the objective's default"
    )
    cfg_scale: float = Field(1.0, ge=0.0, le=100.0, description="classifier-free guidance; 1: no guidance")
    temperature: float = Field(
        1.0, ge=0.0, le=100.0, description="LM: softmax temperature of every code drawn; 0: always the most likely"
    )
    top_k: int = Field(0, ge=0, le=2**20, description="LM: draw among the k most likely codes only; 0: all")
    top_p: float = Field(
        0.0, ge=0.0, le=1.0, description="LM: draw among the most likely codes whose probability reaches p; 0: all"
    )
    batch_size: Annotated[int, RUNTIME_ONLY] = Field(
        4,
        ge=1,
        le=4096,
        description="files generated at once; another batch size can move a few samples by 1 LSB (float rounding)",
    )
    conditioning: dict[str, float | int | str | None] = Field(
        default_factory=dict,
        description="values by conditioner id; seconds_start defaults to 0 and seconds_total to `seconds`",
    )
    device: Annotated[Literal["auto", "cpu", "cuda"], RUNTIME_ONLY] = "auto"
