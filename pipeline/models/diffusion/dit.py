"""1-D diffusion transformer (stable-audio-tools' `DiffusionTransformer`, continuous transformer).

Module names, shapes and initialisation match SAT's `models/dit.py`, so Stable Audio Open's
diffusion weights load strictly; the forward pass computes SAT's `_forward`. Classifier-free
guidance and condition dropout belong to the diffusion model wrapper, not to this backbone.
Unlike SAT, `mask` and `cross_attn_mask` are honoured (SAT drops both)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.registry import register
from pipeline.models.blocks import ContinuousTransformer, FourierFeatures
from pipeline.models.diffusion.dit_config import DiTConfig

Tensor = torch.Tensor


def _mlp(dim_in: int, dim_out: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out, bias=bias), nn.SiLU(), nn.Linear(dim_out, dim_out, bias=bias))


def _zero_conv(channels: int) -> nn.Conv1d:
    """Bias-free 1x1 conv, zero-init: the residual pre/post convs start as the identity."""
    conv = nn.Conv1d(channels, channels, 1, bias=False)
    nn.init.zeros_(conv.weight)
    return conv


@register("backbone", "dit", config=DiTConfig)
class DiffusionTransformer(nn.Module):
    """(batch, io_channels, frames) latents + time in [0, 1] + conditions -> (batch, io_channels, frames)."""

    def __init__(self, config: DiTConfig, io_channels: int | None = None):
        super().__init__()
        self.config = config
        self.io_channels = _io_channels(config, io_channels)
        self.patch_size = config.patch_size
        embed_dim = config.embed_dim
        self.timestep_features = FourierFeatures(1, config.timestep_features_dim)
        self.to_timestep_embed = _mlp(config.timestep_features_dim, embed_dim, bias=True)
        cond_embed_dim = embed_dim if config.project_cond_tokens else config.cond_token_dim
        if config.cond_token_dim > 0:
            self.to_cond_embed = _mlp(config.cond_token_dim, cond_embed_dim, bias=False)
        if config.global_cond_dim > 0:
            global_embed_dim = embed_dim if config.project_global_cond else config.global_cond_dim
            self.to_global_embed = _mlp(config.global_cond_dim, global_embed_dim, bias=False)
        self.transformer = _transformer(config, self.io_channels * self.patch_size, cond_embed_dim)
        self.preprocess_conv = _zero_conv(self.io_channels)
        self.postprocess_conv = _zero_conv(self.io_channels)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cross_attn_cond: Tensor | None = None,
        cross_attn_mask: Tensor | None = None,
        global_cond: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, io_channels, T); t (B,); cross_attn_cond (B, S, cond_token_dim) with cross_attn_mask
        (B, S) True for real tokens; global_cond (B, global_cond_dim); mask (B, T) True for real frames:
        padded frames are never attended to, and the output there is unspecified."""
        self._check_inputs(x, cross_attn_cond, global_cond)
        dtype = next(self.parameters()).dtype
        x, t = x.to(dtype), t.to(dtype)
        if cross_attn_cond is not None:
            cross_attn_cond = self.to_cond_embed(cross_attn_cond.to(dtype))
        global_embed = self._global_embed(t, None if global_cond is None else global_cond.to(dtype))
        prepend = global_embed.unsqueeze(1) if self.config.global_cond_type == "prepend" else None
        x = self.preprocess_conv(x) + x
        out = self.transformer(
            self._patch(x.transpose(1, 2)),
            prepend_embeds=prepend,
            context=cross_attn_cond,
            context_mask=cross_attn_mask,
            global_cond=global_embed if prepend is None else None,
            mask=self._token_mask(mask),
        )
        out = out.transpose(1, 2)[:, :, 0 if prepend is None else prepend.shape[1] :]
        out = self._unpatch(out)
        return self.postprocess_conv(out) + out

    def _global_embed(self, t: Tensor, global_cond: Tensor | None) -> Tensor:
        """The timestep embedding, plus the embedded global condition when there is one: (B, embed_dim)."""
        timestep_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))
        if global_cond is None:
            return timestep_embed
        return self.to_global_embed(global_cond) + timestep_embed

    def _patch(self, x: Tensor) -> Tensor:
        """(B, T * p, C) -> (B, T, C * p), channel-major within a token ("b (t p) c -> b t (c p)")."""
        p = self.patch_size
        if p == 1:
            return x
        b, frames, c = x.shape
        return x.reshape(b, frames // p, p, c).transpose(2, 3).reshape(b, frames // p, c * p)

    def _unpatch(self, x: Tensor) -> Tensor:
        """(B, C * p, T) -> (B, C, T * p) ("b (c p) t -> b c (t p)")."""
        p = self.patch_size
        if p == 1:
            return x
        b, cp, tokens = x.shape
        return x.reshape(b, cp // p, p, tokens).transpose(2, 3).reshape(b, cp // p, tokens * p)

    def _token_mask(self, mask: Tensor | None) -> Tensor | None:
        """A token is real when any of its frames is (pad by whole patches to keep frames apart)."""
        if mask is None or self.patch_size == 1:
            return mask
        return mask.reshape(mask.shape[0], -1, self.patch_size).any(dim=-1)

    def _check_inputs(self, x: Tensor, cross_attn_cond: Tensor | None, global_cond: Tensor | None) -> None:
        """Conditions the model was not built for would otherwise be dropped silently, or fail deep inside."""
        if x.shape[1] != self.io_channels or x.shape[2] % self.patch_size:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (batch, {self.io_channels}, frames) with frames a "
                f"multiple of patch_size {self.patch_size}"
            )
        if cross_attn_cond is not None and not hasattr(self, "to_cond_embed"):
            raise ValueError("cross_attn_cond given, but the DiT was built with cond_token_dim 0")
        if global_cond is not None and not hasattr(self, "to_global_embed"):
            raise ValueError("global_cond given, but the DiT was built with global_cond_dim 0")


def _transformer(config: DiTConfig, channels: int, cond_embed_dim: int) -> ContinuousTransformer:
    """Tokens of `channels` (io_channels * patch_size) in and out; adaLN gets the embed_dim-wide global embedding."""
    return ContinuousTransformer(
        dim=config.embed_dim,
        depth=config.depth,
        dim_heads=config.head_dim,
        dim_in=channels,
        dim_out=channels,
        cross_attend=config.cond_token_dim > 0,
        cond_token_dim=cond_embed_dim if config.cond_token_dim > 0 else None,
        global_cond_dim=config.embed_dim if config.global_cond_type == "adaLN" else None,
        ff_mult=config.ff_mult,
        checkpointing=config.checkpointing,
    )


def _io_channels(config: DiTConfig, io_channels: int | None) -> int:
    """The config's io_channels wins; the argument (the autoencoder's latent_dim) fills in a null."""
    if config.io_channels is not None:
        if io_channels is not None and io_channels != config.io_channels:
            raise ValueError(f"io_channels {io_channels} given, but the config sets {config.io_channels}")
        return config.io_channels
    if io_channels is None:
        raise ValueError("io_channels is null in the config and was not given (the autoencoder's latent_dim)")
    return io_channels
