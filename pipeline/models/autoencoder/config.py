"""`autoencoder.model`: encoder -> bottleneck -> decoder (`AutoencoderModelConfig`, optionally with a
spectrogram `transform` around it), or a whole autoencoder registered as kind `autoencoder` (`type:
import`, `encodec`, `dac`), beside the `Autoencoder` it builds. Torch-free: the component configs come
from the registry's `*_config` modules, and its checks read only config classes (never an nn.Module).

Every model config answers the same questions: in_channels / out_channels (audio), latent_dim,
downsampling_ratio (audio samples per latent frame), is_discrete, n_codebooks, codebook_size,
sample_rate (None: any), `bottleneck` (type, is_discrete, codebooks), `trainable`, `weights_file`
and `data_problems(channels, sample_rate)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, TypeAdapter, model_validator

from pipeline.config.base import StrictModel, check_fields
from pipeline.config.imported import from_hydra
from pipeline.config.registry import component_union, discover, registered

discover()  # registered configs must exist before the unions below are built (imports no component)

COMPOSITE = "encoder_decoder"  # the tag of the encoder/decoder/bottleneck model, which has no `type`
Problems = list[tuple[tuple[str | int, ...], str]]


class AutoencoderModelConfig(StrictModel):
    """Encoder -> bottleneck -> decoder. Encoder and decoder configs expose `in_channels` /
    `out_channels`, `latent_dim` and `downsampling_ratio` (derived from their strides). With a
    `transform`, the encoder takes (and the decoder gives) its spectrogram instead of the audio."""

    trainable: ClassVar[bool] = True
    sample_rate: ClassVar[int | None] = None  # any: the experiment's
    weights_file: ClassVar[Path | None] = None  # autoencoder.checkpoint or the trained weights

    encoder: component_union("encoder") = Field(description="audio (or its spectrogram) -> pre-bottleneck latents")  # type: ignore[valid-type]
    decoder: component_union("decoder") = Field(description="latents -> audio (or its spectrogram)")  # type: ignore[valid-type]
    bottleneck: component_union("bottleneck") = Field(description="vae | tanh | identity | rvq | fsq | import")  # type: ignore[valid-type]
    transform: component_union("transform") | None = Field(  # type: ignore[valid-type]
        None,
        description="stft: the encoder sees the spectrogram (2 x audio channels), the decoder's is inverted; null: audio",
        exclude_if=lambda value: value is None,  # absent from the dump (and stage hash) when not used
        json_schema_extra=lambda schema: schema.pop("default", None),  # snakemake validate: no null to fill in
    )

    @model_validator(mode="after")
    def _check_geometry(self) -> AutoencoderModelConfig:
        problems: Problems = []
        factor = self.bottleneck.encoder_width_factor
        expected = factor * self.decoder.latent_dim
        if self.encoder.latent_dim != expected:
            why = (
                f"{factor} x decoder.latent_dim for a {self.bottleneck.type} bottleneck"
                if factor != 1
                else "decoder.latent_dim"
            )
            problems.append((("encoder", "latent_dim"), f"must be {why} = {expected}, got {self.encoder.latent_dim}"))
        if self.encoder.downsampling_ratio != self.decoder.downsampling_ratio:
            strides = [list(part.strides) for part in (self.encoder, self.decoder) if hasattr(part, "strides")]
            shown = f" (encoder strides {strides[0]}, decoder strides {strides[1]})" if len(strides) == 2 else ""
            problems.append(
                (
                    ("decoder", "strides" if hasattr(self.decoder, "strides") else "downsampling_ratio"),
                    f"downsample by {self.decoder.downsampling_ratio} but the encoder's by {self.encoder.downsampling_ratio}{shown}",
                )
            )
        check_fields(self, problems + self._transform_problems())
        return self

    def _transform_problems(self) -> Problems:
        """The channel arithmetic of a spectrogram model: encoder input = decoder output = 2 x audio."""
        if self.transform is None:
            return []
        problems: Problems = []
        parts = self.encoder.in_channels
        if parts % 2:
            problems.append(
                (
                    ("encoder", "in_channels"),
                    f"must be 2 x the audio channels with the stft transform (real and imaginary parts as channels), got {parts}",
                )
            )
        if self.decoder.out_channels != parts:
            problems.append(
                (
                    ("decoder", "out_channels"),
                    f"must equal encoder.in_channels ({parts}): the decoder gives back the spectrogram the stft "
                    f"transform inverts, got {self.decoder.out_channels}",
                )
            )
        return problems

    def data_problems(self, channels: int, sample_rate: int) -> Problems:
        """This model against `data` (paths relative to autoencoder.model)."""
        if self.transform is None:
            wanted, why = channels, f"data.channels ({channels})"
        else:
            wanted = self.transform.channels(channels)
            why = f"2 x data.channels ({channels}) = {wanted}: the stft transform gives real and imaginary parts as channels"
        return [
            ((part, field), f"must equal {why}, got {value}")
            for part, field, value in (
                ("encoder", "in_channels", self.encoder.in_channels),
                ("decoder", "out_channels", self.decoder.out_channels),
            )
            if value != wanted
        ]

    @property
    def latent_dim(self) -> int:
        return self.decoder.latent_dim

    @property
    def downsampling_ratio(self) -> int:
        """Audio samples per latent frame (the transform's hop times the encoder's ratio)."""
        hop = self.transform.downsampling_ratio if self.transform is not None else 1
        return hop * self.encoder.downsampling_ratio

    @property
    def in_channels(self) -> int:
        """Audio channels."""
        return self.encoder.in_channels // (2 if self.transform is not None else 1)

    @property
    def out_channels(self) -> int:
        return self.decoder.out_channels // (2 if self.transform is not None else 1)

    @property
    def is_discrete(self) -> bool:
        return bool(self.bottleneck.is_discrete)

    @property
    def n_codebooks(self) -> int | None:
        return self.bottleneck.n_codebooks if self.is_discrete else None

    @property
    def codebook_size(self) -> int | None:
        return self.bottleneck.codebook_size if self.is_discrete else None


def _model_tag(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", COMPOSITE)
    return getattr(value, "type", COMPOSITE)


class _ConditionalSchema:
    """JSON Schema of the union as if/then on `type` (no `type`: the composite), so that snakemake's
    validate fills defaults into the one branch that applies (see `pipeline.config.schema`)."""

    def __init__(self, names: list[str]):
        self.names = names  # the members' tags, in order

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        members = handler(core)["oneOf"]
        composite, *others = members
        branches = [
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": member}
            for name, member in zip(self.names[1:], others)
        ]
        branches.append({"if": {"not": {"required": ["type"]}}, "then": composite})
        return {"type": "object", "properties": {"type": {"enum": self.names[1:]}}, "allOf": branches}


def _model_union() -> Any:
    members = [Annotated[AutoencoderModelConfig, Tag(COMPOSITE)]]
    members += [Annotated[entry.config, Tag(name)] for name, entry in registered("autoencoder").items()]
    union = Annotated[Union[tuple(members)], Discriminator(_model_tag)]  # noqa: UP007 (X | Y cannot unpack)
    names = [COMPOSITE, *registered("autoencoder")]
    return Annotated[union, BeforeValidator(from_hydra), _ConditionalSchema(names)]


# encoder/decoder/bottleneck (no `type`), or a whole autoencoder by `type` (import, encodec, dac).
AutoencoderModel = _model_union()
_adapter: TypeAdapter[Any] = TypeAdapter(AutoencoderModel)


def parse_model_config(data: Any) -> Any:
    """A plain `autoencoder.model` (a saved description's) -> its validated config."""
    return _adapter.validate_python(data)
