"""stable-audio-tools components we have no registered counterpart for, mapped to `type: import` of
the very class stable-audio-tools builds for them, with the parameters it passes. The weights then
load key for key (our composite's `encoder.` / `decoder.` prefixes are stable-audio-tools' own).

- `dac` encoder / decoder: `stable_audio_tools.models.autoencoders.DACEncoderWrapper` /
  `DACDecoderWrapper` (which build descript-audio-codec's `dac.model.dac.Encoder` / `Decoder`);
- `seanet` encoder / decoder: `encodec.modules.SEANetEncoder` / `SEANetDecoder` (Meta's `encodec`
  package); stable-audio-tools reverses the encoder's `ratios` before building it, so do we.

The numbers validation needs (in/out channels, latent width, downsampling ratio) are not constructor
arguments of these classes: they are written into the block, derived from the parameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SAT_MODULE = "stable_audio_tools.models.autoencoders"
INSTALL = {
    "stable_audio_tools": "pip install stable-audio-tools descript-audio-codec (DAC's encoder and decoder)",
    "encodec": "pip install encodec (Meta's SEANet encoder and decoder)",
}
MUSICGEN_HINT = (
    "a seanet + rvq model with 4 codebooks of 2048 at 32 kHz is MusicGen's EnCodec: with the published "
    "weights (facebook/encodec_32khz saved locally), use `autoencoder.model: {type: encodec, path: DIR, bandwidth: 2.2}` "
    "instead (no training, codes for the LM path)"
)


@dataclass(frozen=True)
class SatImport:
    target: str
    facts: Callable[[dict[str, Any]], dict[str, Any]]  # SAT config -> in/out_channels, latent_dim, downsampling_ratio
    params: Callable[[dict[str, Any]], dict[str, Any]] = dict


def _dac_encoder(config: dict[str, Any]) -> dict[str, Any]:
    d_model = config.get("d_model", 64)
    strides = config.get("strides", [2, 4, 8, 8])
    width = config.get("latent_dim") or d_model * 2 ** len(strides)
    return {"in_channels": config.get("in_channels", 1), "latent_dim": width, "downsampling_ratio": math.prod(strides)}


def _dac_decoder(config: dict[str, Any]) -> dict[str, Any]:
    rates = config.get("rates", [8, 8, 4, 2])
    return {
        "out_channels": config.get("out_channels", 1),
        "latent_dim": config["latent_dim"],
        "downsampling_ratio": math.prod(rates),
    }


def _seanet(role: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def facts(config: dict[str, Any]) -> dict[str, Any]:
        channels = "in_channels" if role == "encoder" else "out_channels"
        return {
            channels: config.get("channels", 1),
            "latent_dim": config.get("dimension", 128),
            "downsampling_ratio": math.prod(config.get("ratios", [8, 5, 4, 2])),
        }

    return facts


def _reversed_ratios(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "ratios": list(reversed(config.get("ratios", [2, 2, 2, 2, 2])))}


SAT_IMPORTS: dict[tuple[str, str], SatImport] = {
    ("encoder", "dac"): SatImport(f"{SAT_MODULE}.DACEncoderWrapper", _dac_encoder),
    ("decoder", "dac"): SatImport(f"{SAT_MODULE}.DACDecoderWrapper", _dac_decoder),
    ("encoder", "seanet"): SatImport("encodec.modules.SEANetEncoder", _seanet("encoder"), _reversed_ratios),
    ("decoder", "seanet"): SatImport("encodec.modules.SEANetDecoder", _seanet("decoder")),
}


def sat_import_block(part: str, sat_type: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The `type: import` block for a stable-audio-tools component, or None if it has no mapping."""
    mapping = SAT_IMPORTS.get((part, sat_type))
    if mapping is None:
        return None
    return {"type": "import", "target": mapping.target, "params": mapping.params(config), **mapping.facts(config)}


def install_hint(target: str) -> str:
    package = target.partition(".")[0]
    return f"install it where the pipeline runs ({INSTALL.get(package, f'pip install {package}')})"


def sat_import_notes(model: dict[str, Any]) -> list[str]:
    """What the user should know about a converted model that uses imported classes."""
    parts = [part for part in ("encoder", "decoder") if model[part].get("type") == "import"]
    targets = [model[part]["target"] for part in parts]
    notes = [
        f"autoencoder.model.{part}: type import of {model[part]['target']}, the class stable-audio-tools builds"
        for part in parts
    ]
    bottleneck = model["bottleneck"]
    musicgen = (
        any(target.startswith("encodec.") for target in targets)
        and bottleneck.get("type") == "rvq"
        and bottleneck.get("num_quantizers") == 4
        and bottleneck.get("codebook_size") == 2048
    )
    return notes + ([MUSICGEN_HINT] if musicgen else [])
