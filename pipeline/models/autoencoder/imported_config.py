"""`type: import`: an encoder, decoder, bottleneck or whole autoencoder from the user's own code, by
import path (`target: my_lab.models.SEANetEncoder2d`, `params: {...}`, or Hydra's `_target_`).

Validation imports the class, checks `params` against its constructor (`pipeline.config.imported`)
and checks the contract a pipeline stage relies on, naming what is missing:

- encoder: called on audio (batch, in_channels, samples) (or on the spectrogram of a `transform`)
  -> (batch, latent_dim, samples / downsampling_ratio);
- decoder: (batch, latent_dim, frames) -> (batch, out_channels, frames * downsampling_ratio);
- bottleneck: `encode(x, sample) -> (latents, info)` (`info["codes"]` when discrete), `decode(latents)`,
  and `decode_codes(codes)` when discrete;
- whole autoencoder: `encode(audio) -> latents (batch, latent_dim, frames)` or integer codes
  (batch, n_codebooks, frames), `decode(latents_or_codes) -> audio`, at `sample_rate` with `channels`.

The numbers (in_channels, latent_dim, downsampling_ratio, ...) come from the block itself, else a
constructor argument of that name, else a class attribute of that name; the model built from the
block is checked against them once, on a two-frame probe, before any shard is encoded."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from pipeline.config.base import ComponentConfig, check_fields
from pipeline.config.imported import (
    TARGET_PATTERN,
    argument_problems,
    from_hydra,
    import_target,
    missing_methods,
    stated,
)
from pipeline.config.registry import register_config
from pipeline.models.autoencoder.whole_config import WholeAutoencoderConfig

MODULE = "pipeline.models.autoencoder.imported"
Count = int | None


class _Imported(ComponentConfig):
    type: Literal["import"] = "import"
    target: str = Field(pattern=TARGET_PATTERN, description="package.module.Class to build (importable here)")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of its constructor")
    hydra: SkipJsonSchema[bool] = Field(
        False, exclude=True, description="written with _target_: params are the block's keys"
    )

    role: ClassVar[str] = "component"
    methods: ClassVar[tuple[str, ...]] = ("forward",)
    facts: ClassVar[dict[str, str]] = {}  # required numbers -> what they are

    @model_validator(mode="before")
    @classmethod
    def _hydra_way(cls, raw: Any) -> Any:
        return from_hydra(raw)

    @model_validator(mode="after")
    def _check_contract(self) -> _Imported:
        try:
            imported = import_target(self.target)
        except ValueError as error:
            check_fields(self, [(("target",), str(error))])
        problems = argument_problems(imported, self.params, () if self.hydra else ("params",), self.target)
        problems += [
            ((), f"{self.target} breaks the contract of an imported {self.role}: it has no {name}() method")
            for name in missing_methods(imported, self.methods)
        ]
        for name, what in self.required_facts().items():
            value = stated(imported, self.params, name, getattr(self, name))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(((), self._unstated(name, what, value)))
            else:
                object.__setattr__(self, name, value)  # resolved once, so the dump (and hash) says it
        check_fields(self, problems)
        return self

    def required_facts(self) -> dict[str, str]:
        return dict(self.facts)

    def _unstated(self, name: str, what: str, value: Any) -> str:
        got = "" if value is None else f" (it says {value!r}, not a whole number >= 1)"
        where = f"`{name}:` in this block, " if not self.hydra else ""
        return (
            f"{self.target} does not state its {name}{got}: the contract of an imported {self.role} needs "
            f"{what}; set {where}a constructor argument {name!r} or a class attribute {name!r}"
        )


@register_config("encoder", "import", component=f"{MODULE}:imported_encoder")
class ImportedEncoderConfig(_Imported):
    role: ClassVar[str] = "encoder"
    facts: ClassVar[dict[str, str]] = {
        "in_channels": "the input channels",
        "latent_dim": "the output width (2x the latent for a vae bottleneck)",
        "downsampling_ratio": "input samples (or spectrogram frames) per output frame",
    }
    in_channels: Count = Field(None, ge=1, le=4096, description="input channels; null: the class states it")
    latent_dim: Count = Field(None, ge=1, le=65536, description="output width; null: the class states it")
    downsampling_ratio: Count = Field(None, ge=1, le=2**20, description="input steps per output frame; null: the class")


@register_config("decoder", "import", component=f"{MODULE}:imported_decoder")
class ImportedDecoderConfig(_Imported):
    role: ClassVar[str] = "decoder"
    facts: ClassVar[dict[str, str]] = {
        "out_channels": "the output channels",
        "latent_dim": "the input (latent) width",
        "downsampling_ratio": "output samples (or spectrogram frames) per input frame",
    }
    out_channels: Count = Field(None, ge=1, le=4096, description="output channels; null: the class states it")
    latent_dim: Count = Field(None, ge=1, le=65536, description="latent width; null: the class states it")
    downsampling_ratio: Count = Field(
        None, ge=1, le=2**20, description="output steps per latent frame; null: the class"
    )


@register_config("bottleneck", "import", component=f"{MODULE}:imported_bottleneck")
class ImportedBottleneckConfig(_Imported):
    role: ClassVar[str] = "bottleneck"
    methods: ClassVar[tuple[str, ...]] = ("encode", "decode")
    is_discrete: bool | None = Field(None, description="makes integer codes; null: the class says (default false)")
    encoder_width_factor: Count = Field(None, ge=1, le=16, description="encoder width / latent width; null: 1")
    n_codebooks: Count = Field(None, ge=1, le=64, description="codes per frame (discrete)")
    codebook_size: Count = Field(None, ge=2, le=2**31, description="entries per codebook (discrete)")

    @model_validator(mode="after")
    def _defaults(self) -> ImportedBottleneckConfig:
        imported = import_target(self.target)
        discrete = stated(imported, self.params, "is_discrete", self.is_discrete)
        object.__setattr__(self, "is_discrete", bool(discrete))
        factor = stated(imported, self.params, "encoder_width_factor", self.encoder_width_factor)
        object.__setattr__(self, "encoder_width_factor", factor or 1)
        if self.is_discrete and missing_methods(imported, ("decode_codes",)):
            check_fields(
                self, [((), f"{self.target} breaks the contract of a discrete bottleneck: no decode_codes() method")]
            )
        return self

    def required_facts(self) -> dict[str, str]:
        # Only read after `_defaults`... which runs after this; the class attribute decides here.
        imported = import_target(self.target)
        if stated(imported, self.params, "is_discrete", self.is_discrete):
            return {"n_codebooks": "codes per frame", "codebook_size": "entries per codebook"}
        return {}


@register_config("autoencoder", "import", component=f"{MODULE}:ImportedAutoencoder")
class ImportedAutoencoderConfig(_Imported, WholeAutoencoderConfig):
    """A whole autoencoder: weights from `autoencoder.checkpoint`, loaded strictly into it."""

    role: ClassVar[str] = "autoencoder"
    methods: ClassVar[tuple[str, ...]] = ("encode", "decode")
    channels_field: ClassVar[tuple[str, ...]] = ("channels",)
    sample_rate: Count = Field(None, ge=1000, le=768_000, description="Hz; null: the class states it")
    channels: Count = Field(None, ge=1, le=64, description="audio channels; null: the class states it")
    downsampling_ratio: Count = Field(None, ge=1, le=2**20, description="samples per latent frame; null: the class")
    latent_dim: Count = Field(None, ge=1, le=65536, description="continuous latents: their width")
    n_codebooks: Count = Field(None, ge=1, le=64, description="discrete codes: codes per frame")
    codebook_size: Count = Field(None, ge=2, le=2**31, description="discrete codes: entries per codebook")

    def required_facts(self) -> dict[str, str]:
        facts = {
            "sample_rate": "its sample rate",
            "channels": "its audio channels",
            "downsampling_ratio": "samples per frame",
        }
        imported = import_target(self.target)
        if stated(imported, self.params, "n_codebooks", self.n_codebooks) is not None:
            return {**facts, "n_codebooks": "codes per frame", "codebook_size": "entries per codebook"}
        return {**facts, "latent_dim": "the latent width (or n_codebooks and codebook_size for codes)"}

    @property
    def in_channels(self) -> int:
        assert self.channels is not None  # resolved by validation
        return self.channels
