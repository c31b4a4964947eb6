"""Reconstruction losses for autoencoder training: L1, multi-resolution STFT and log-mel (torchaudio)."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (hop = fft/4, Hann window)."""

    def __init__(self, fft_sizes: tuple[int, ...]):
        super().__init__()
        self.spectrograms = nn.ModuleList(
            torchaudio.transforms.Spectrogram(n_fft=size, hop_length=size // 4, power=1.0) for size in fft_sizes
        )

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = output.new_zeros(())
        for spectrogram in self.spectrograms:
            predicted, reference = spectrogram(output).clamp_min(1e-7), spectrogram(target).clamp_min(1e-7)
            convergence = torch.linalg.vector_norm(reference - predicted) / torch.linalg.vector_norm(reference)
            total = total + convergence + (predicted.log() - reference.log()).abs().mean()
        return total / len(self.spectrograms)


class MelLoss(nn.Module):
    """L1 between log-mel spectrograms."""

    def __init__(self, sample_rate: int, n_fft: int, n_mels: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((self.mel(output) + 1e-5).log() - (self.mel(target) + 1e-5).log()).abs().mean()


class ReconstructionLoss(nn.Module):
    """Weighted L1 + multi-resolution STFT + log-mel; FFT sizes longer than the crop are left out."""

    def __init__(
        self,
        sample_rate: int,
        crop_samples: int,
        l1_weight: float,
        stft_weight: float,
        fft_sizes: tuple[int, ...],
        mel_weight: float,
        n_mels: int,
    ):
        super().__init__()
        usable = tuple(size for size in fft_sizes if size <= crop_samples) or (min(fft_sizes),)
        self.weights = {"l1": l1_weight, "stft": stft_weight, "mel": mel_weight}
        self.terms = nn.ModuleDict(
            {
                "stft": MultiResolutionSTFTLoss(usable),
                "mel": MelLoss(sample_rate, max(usable), n_mels),
            }
        )

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {"l1": (output - target).abs().mean()}
        for name, term in self.terms.items():
            if self.weights[name] > 0:
                parts[name] = term(output.float(), target.float())
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}
