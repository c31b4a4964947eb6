"""A research lab's own autoencoder code, written by tests into a package outside the repository
(`my_lab`), for `type: import`: waveform and spectrogram (2-D) encoders/decoders, a whole codec, and
classes that break the contract. `write_lab(tmp_path)` writes it and puts it on sys.path; subprocesses
get it through PYTHONPATH (`lab_env`)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

LAB_SOURCE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Encoder(nn.Module):
        """(B, in_channels, T) -> (B, latent_dim, T / downsampling_ratio)."""

        def __init__(self, in_channels: int, latent_dim: int, downsampling_ratio: int = 4, width: int = 8):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv1d(in_channels, width, downsampling_ratio, stride=downsampling_ratio),
                nn.GELU(),
                nn.Conv1d(width, latent_dim, 1),
            )

        def forward(self, x):
            return self.net(x)


    class Decoder(nn.Module):
        def __init__(self, out_channels: int, latent_dim: int, downsampling_ratio: int = 4, width: int = 8):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv1d(latent_dim, width, 1),
                nn.GELU(),
                nn.ConvTranspose1d(width, out_channels, downsampling_ratio, stride=downsampling_ratio),
            )

        def forward(self, x):
            return self.net(x)


    class SEANetEncoder2d(nn.Module):
        """Spectrogram (B, in_channels, bins, frames) -> (B, latent_dim, frames / 2): 2-D convs, then
        the frequency axis folded into channels."""

        downsampling_ratio = 2  # spectrogram frames per latent frame, stated as a class attribute

        def __init__(self, in_channels: int, latent_dim: int, bins: int, width: int = 4):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.out = nn.Conv1d(width * bins, latent_dim, 2, stride=2)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.out(h.flatten(1, 2))


    class SEANetDecoder2d(nn.Module):
        downsampling_ratio = 2

        def __init__(self, out_channels: int, latent_dim: int, bins: int, width: int = 4):
            super().__init__()
            self.bins, self.width = bins, width
            self.up = nn.ConvTranspose1d(latent_dim, width * bins, 2, stride=2)
            self.conv = nn.Conv2d(width, out_channels, 3, padding=1)

        def forward(self, z):
            h = self.up(z)
            return self.conv(h.reshape(h.shape[0], self.width, self.bins, h.shape[-1]))


    class TinyCodec(nn.Module):
        """A whole autoencoder: encode -> latents (B, latent_dim, T / hop), decode -> audio."""

        sample_rate = 16000

        def __init__(self, channels: int = 1, latent_dim: int = 4, downsampling_ratio: int = 8):
            super().__init__()
            self.encoder = Encoder(channels, latent_dim, downsampling_ratio)
            self.decoder = Decoder(channels, latent_dim, downsampling_ratio)

        def encode(self, audio):
            return self.encoder(audio)

        def decode(self, latents):
            return self.decoder(latents)


    class NoDecode(nn.Module):
        sample_rate = 16000

        def __init__(self, channels: int = 1, latent_dim: int = 4, downsampling_ratio: int = 8):
            super().__init__()

        def encode(self, audio):
            return audio


    class Unstated(nn.Module):
        """An encoder that says nothing about its output width."""

        def __init__(self, in_channels: int, downsampling_ratio: int = 4):
            super().__init__()
            self.net = nn.Conv1d(in_channels, 3, downsampling_ratio, stride=downsampling_ratio)

        def forward(self, x):
            return self.net(x)


    class Liar(Encoder):
        """States latent_dim but returns twice as many channels."""

        def forward(self, x):
            y = self.net(x)
            return torch.cat([y, y], dim=1)
    '''
)


def write_lab(root: Path) -> Path:
    """<root>/lab/my_lab/{__init__,models}.py, on sys.path; returns <root>/lab."""
    package = root / "lab" / "my_lab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "models.py").write_text(LAB_SOURCE, encoding="utf-8")
    sys.modules.pop("my_lab.models", None)
    sys.modules.pop("my_lab", None)
    if str(root / "lab") not in sys.path:
        sys.path.insert(0, str(root / "lab"))
    return root / "lab"


def lab_env(lab: Path) -> dict[str, str]:
    """The environment of a subprocess that imports my_lab (and this repository's pipeline)."""
    paths = [str(lab), str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


def byo_experiment(directory: Path, audio: Path, model: dict, **sections: object) -> Path:
    """<directory>/<name>.yaml: 16 kHz mono audio from `audio` with the autoencoder `model` (and
    `sections` merged over the document), its plan and shards written."""
    import yaml

    from pipeline.config import load_experiment
    from pipeline.shards.plan import write_plan
    from pipeline.shards.run import write_all_shards

    autoencoder = {"model": model, **sections.pop("autoencoder", {})}  # type: ignore[dict-item]
    document = {
        "name": "byo",
        "paths": {"audio_dir": str(audio), "work_dir": str(directory / "work")},
        "data": {"sample_rate": 16000, "channels": 1, "max_item_seconds": 10, "shard": {"max_items": 8}},
        "autoencoder": autoencoder,
        "pre_encode": {"batch_size": 3, "window_seconds": 4.0, "num_workers": 0, "device": "cpu"},
        **sections,
    }
    path = directory / "byo.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    experiment = load_experiment(path)
    write_plan(experiment)
    write_all_shards(experiment, progress=False)
    return path


def write_codec(directory: Path, kind: str, seed: int = 0) -> Path:
    """A tiny random-initialised EnCodec or DAC at 16 kHz mono (hop 8, codebooks of 16 entries),
    saved with save_pretrained into `directory` (config.json + model.safetensors), as a user would
    have the published one on disk."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if kind == "encodec":
        config = transformers.EncodecConfig(
            sampling_rate=16000,
            audio_channels=1,
            num_filters=4,
            hidden_size=8,
            codebook_size=16,
            upsampling_ratios=[4, 2],
            num_lstm_layers=1,
            target_bandwidths=[8.0, 16.0, 32.0],  # 2000 frames/s x 4 bits per codebook: 1, 2 and 4 codebooks
        )
        model = transformers.EncodecModel(config)
    else:
        config = transformers.DacConfig(
            sampling_rate=16000,
            encoder_hidden_size=4,
            downsampling_ratios=[2, 4],
            decoder_hidden_size=16,
            upsampling_ratios=[4, 2],
            hidden_size=8,
            hop_length=8,
            n_codebooks=3,
            codebook_size=16,
            codebook_dim=4,
        )
        model = transformers.DacModel(config)
    model.save_pretrained(str(directory))
    return directory


LM_TRAIN = {
    "model": {"type": "lm", "embed_dim": 32, "depth": 1, "num_heads": 1, "cond_dim": 16, "conditioners": []},
    "data": {"crop_frames": 16, "normalise": "none", "num_workers": 0, "holdout_items": 1},
    "steps": 2,
    "batch_size": 2,
}
