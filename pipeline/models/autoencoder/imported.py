"""`type: import` components: the user's class built with its `params`, and checked against the
contract its config states (`imported_config.py`) on a two-frame probe, so that a class that breaks
it fails once, in one line naming the YAML path, instead of as a shape error deep in a shard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config.imported import import_target
from pipeline.config.registry import register
from pipeline.errors import UserFacingError
from pipeline.models.autoencoder.imported_config import (
    ImportedAutoencoderConfig,
    ImportedBottleneckConfig,
    ImportedDecoderConfig,
    ImportedEncoderConfig,
)

PROBE_FRAMES = 2
PATH = "autoencoder.model"


class ContractError(UserFacingError):
    """An imported class does not do what its config states."""


def instantiate(config: Any, where: str) -> nn.Module:
    """`target(**params)`, which must be an nn.Module."""
    try:
        built = import_target(config.target)(**config.params)
    except Exception as error:  # the user's constructor: one line naming the block
        raise ContractError(f"{where}: building {config.target} raised {type(error).__name__}: {error}") from None
    if not isinstance(built, nn.Module):
        raise ContractError(f"{where}: {config.target} made a {type(built).__name__}, not a torch.nn.Module")
    return built


@register("encoder", "import", config=ImportedEncoderConfig)
def imported_encoder(config: ImportedEncoderConfig) -> nn.Module:
    return instantiate(config, f"{PATH}.encoder")


@register("decoder", "import", config=ImportedDecoderConfig)
def imported_decoder(config: ImportedDecoderConfig) -> nn.Module:
    return instantiate(config, f"{PATH}.decoder")


@register("bottleneck", "import", config=ImportedBottleneckConfig)
def imported_bottleneck(config: ImportedBottleneckConfig, dim: int) -> nn.Module:
    module = instantiate(config, f"{PATH}.bottleneck")
    if not hasattr(module, "is_discrete"):
        module.is_discrete = config.is_discrete  # what the training family reads
    return module


def probe(
    function: Callable[[torch.Tensor], Any], module: nn.Module, given: torch.Tensor, where: str, what: str
) -> Any:
    """`function(given)` in eval mode without gradients; any exception becomes a one-line ContractError."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return function(given)
    except Exception as error:
        raise ContractError(
            f"{where}: {what} failed on a probe shaped {tuple(given.shape)}: {type(error).__name__}: {error}"
        ) from None
    finally:
        module.train(training)


def expect_shape(value: Any, where: str, what: str, wanted: dict[int, int], rank: tuple[int, ...]) -> None:
    """`value` must be a tensor of one of the ranks `rank` with size `wanted[axis]` along each axis."""
    if not isinstance(value, torch.Tensor):
        raise ContractError(f"{where}: {what} returned a {type(value).__name__}, not a tensor")
    shape = tuple(value.shape)
    if value.dim() not in rank or any(shape[axis] != size for axis, size in wanted.items()):
        said = ", ".join(
            f"{'batch' if axis == 0 else 'channels' if axis == 1 else 'frames'} {size}" for axis, size in wanted.items()
        )
        raise ContractError(f"{where}: {what} returned shape {shape}; the contract its config states: {said}")


def check_parts(model: Any) -> None:
    """The encoder and decoder of a composite autoencoder on zeros of PROBE_FRAMES latent frames."""
    config = model.config
    audio = torch.zeros(1, model.io_channels, PROBE_FRAMES * model.downsampling_ratio)
    steps = PROBE_FRAMES * config.encoder.downsampling_ratio  # encoder input steps (samples or spectrogram frames)
    given = model.transform(audio) if model.transform is not None else audio
    hidden = probe(model.encoder, model.encoder, given, f"{PATH}.encoder", f"{_name(config.encoder)}")
    expect_shape(
        hidden, f"{PATH}.encoder", _name(config.encoder), {0: 1, 1: config.encoder.latent_dim, -1: PROBE_FRAMES}, (3,)
    )
    latents = torch.zeros(1, config.decoder.latent_dim, PROBE_FRAMES)
    decoded = probe(model.decoder, model.decoder, latents, f"{PATH}.decoder", _name(config.decoder))
    expected = {0: 1, 1: config.decoder.out_channels, -1: steps}
    if model.transform is not None:
        expected[2] = model.transform.config.frequency_bins
    expect_shape(
        decoded, f"{PATH}.decoder", _name(config.decoder), expected, (4,) if model.transform is not None else (3,)
    )
    if config.bottleneck.type == "import":
        where = f"{PATH}.bottleneck"
        result = probe(
            lambda x: model.bottleneck.encode(x, sample=False),
            model.bottleneck,
            hidden,
            where,
            "encode(x, sample=False)",
        )
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            raise ContractError(
                f"{where}: encode(x, sample) must return (latents, info dict), got {type(result).__name__}"
            )
        if config.bottleneck.is_discrete and "codes" not in result[1]:
            raise ContractError(f"{where}: a discrete bottleneck's encode must put its integer codes in info['codes']")


def _name(config: Any) -> str:
    return config.target


@register("autoencoder", "import", config=ImportedAutoencoderConfig)
class ImportedAutoencoder(nn.Module):
    """A whole autoencoder from the user's code, behind the codec interface `WholeAutoencoder` uses."""

    def __init__(self, config: ImportedAutoencoderConfig):
        super().__init__()
        self.config = config
        self.module = instantiate(config, PATH)

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.module.encode(audio)

    def decode_values(self, values: torch.Tensor) -> torch.Tensor:
        return self.module.decode(values)

    def load_weights(self, path: Path, prefix: str | None) -> None:
        load_module_weights(self.module, path, prefix)

    def check(self, owner: Any) -> None:
        check_whole(self, self.module, self.config.target)


def load_module_weights(module: nn.Module, path: Path, prefix: str | None) -> None:
    """`path` into `module`, strictly (every mismatch listed), refusing NaN/Inf weights."""
    from pipeline.models.autoencoder.checkpoints import (
        check_finite_weights,
        load_strict,
        normalise_keys,
        read_state_dict,
    )

    state = normalise_keys(read_state_dict(path), [prefix] if prefix else [])
    load_strict(module, state, source=str(path))
    check_finite_weights(state, str(path))


def check_whole(codec: Any, module: nn.Module, name: str) -> None:
    """A whole autoencoder's encode and decode on zeros of PROBE_FRAMES frames against the geometry
    its config states (width, frames, integer codes or float latents, audio length)."""
    config = codec.config
    audio = torch.zeros(1, config.in_channels, PROBE_FRAMES * config.downsampling_ratio)
    values = probe(codec.encode_audio, module, audio, PATH, f"{name}.encode")
    width = config.n_codebooks if config.is_discrete else config.latent_dim
    expect_shape(values, PATH, f"{name}.encode", {0: 1, 1: width, -1: PROBE_FRAMES}, (3,))
    if config.is_discrete == values.is_floating_point():
        kind = "integer codes" if config.is_discrete else "floating-point latents"
        raise ContractError(f"{PATH}: {name}.encode returned {values.dtype} values; the config states {kind}")
    audio_back = probe(codec.decode_values, module, values, PATH, f"{name}.decode")
    expect_shape(audio_back, PATH, f"{name}.decode", {0: 1, 1: config.in_channels, -1: audio.shape[-1]}, (3,))
