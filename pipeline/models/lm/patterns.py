"""Codebook interleaving patterns: how K parallel code streams of T frames become one sequence of S
positions that an autoregressive model steps through (audiocraft's `CodebooksPatternProvider`).

- `parallel`: S = T; position s holds frame s of every codebook.
- `delay` (MusicGen's default): S = T + K - 1; codebook k is delayed by k positions, so position s
  holds frame s - k of codebook k, and codebook k of a frame is predicted after codebooks < k of it.

Positions that hold no code (the delay's head and tail) are fillers: the model is fed a special token
there and the loss ignores them (`valid`). Sequences are (batch, K, S) and codes (batch, K, T)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor
PATTERNS = ("delay", "parallel")  # lm_config.PATTERNS, here with torch (tested equal)


def _check(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown codebook pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def delays(pattern: str, n_codebooks: int) -> list[int]:
    """Positions by which codebook k is shifted."""
    _check(pattern)
    return list(range(n_codebooks)) if pattern == "delay" else [0] * n_codebooks


def sequence_length(pattern: str, n_codebooks: int, frames: int) -> int:
    return frames + max(delays(pattern, n_codebooks))


def valid(pattern: str, n_codebooks: int, frames: int, device: torch.device | None = None) -> Tensor:
    """(K, S) bool: True where the sequence holds a code, False at fillers."""
    length = sequence_length(pattern, n_codebooks, frames)
    positions = torch.arange(length, device=device)
    shift = torch.tensor(delays(pattern, n_codebooks), device=device)[:, None]
    return (positions >= shift) & (positions < shift + frames)


def interleave(codes: Tensor, pattern: str, filler: int | bool = 0) -> Tensor:
    """(B, K, T) -> (B, K, S), `filler` where no code is (codes may be any dtype: a frame mask too)."""
    batch, n_codebooks, frames = codes.shape
    length = sequence_length(pattern, n_codebooks, frames)
    sequence = codes.new_full((batch, n_codebooks, length), filler)
    for k, shift in enumerate(delays(pattern, n_codebooks)):
        sequence[:, k, shift : shift + frames] = codes[:, k]
    return sequence


def deinterleave(sequence: Tensor, pattern: str, frames: int) -> Tensor:
    """(B, K, S) -> (B, K, T): the inverse of `interleave` (fillers dropped)."""
    batch, n_codebooks, length = sequence.shape
    if length != sequence_length(pattern, n_codebooks, frames):
        raise ValueError(f"a {pattern} sequence of {frames} frames x {n_codebooks} codebooks is not {length} long")
    shifts = delays(pattern, n_codebooks)
    return torch.stack([sequence[:, k, shift : shift + frames] for k, shift in enumerate(shifts)], dim=1)
