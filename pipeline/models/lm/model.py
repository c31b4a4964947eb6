"""The language model over discrete codes (audiocraft's MusicGen `LMModel`): per-codebook embeddings
summed, a causal transformer of the shared blocks (`blocks.ContinuousTransformer`), one head per
codebook; codebooks interleaved by a pattern (`patterns.py`).

Token `codebook_size` is special: it starts the sequence and fills the pattern's positions that hold
no code, as input only (the heads predict the `codebook_size` real entries; the loss ignores fillers).
Crops padded at the end need no attention mask: padded frames are fed as the filler token (what the
delay pattern's tail holds in sampling: a higher codebook of a real frame is predicted after codebook 0
of the next frame), and the loss ignores them.

Conditioning is the diffusion model's: `conditioner.conditioners.<id>` (the same `MultiConditioner`),
cross-attention tokens (projected to embed_dim) and prepended tokens; the null condition zeroes the
cross-attention tokens and keeps the prepended ones, in CFG dropout and in guidance alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.registry import register
from pipeline.models.blocks import ContinuousTransformer, KVCache, LayerNorm
from pipeline.models.conditioners import MultiConditioner, joined_tokens, null_tokens
from pipeline.models.lm import patterns
from pipeline.models.lm.lm_config import LMConfig

Tensor = torch.Tensor
Conditioning = dict[str, Tensor | None]  # cross_attn_cond, cross_attn_mask, prepend_cond


@register("model", "lm", config=LMConfig)
class LanguageModel(nn.Module):
    def __init__(self, config: LMConfig, n_codebooks: int | None = None, codebook_size: int | None = None):
        super().__init__()
        self.config = config
        self.n_codebooks = _resolved(config.n_codebooks, n_codebooks, "n_codebooks")
        self.codebook_size = _resolved(config.codebook_size, codebook_size, "codebook_size")
        self.special = self.codebook_size  # start and filler token (input only)
        dim = config.embed_dim
        self.conditioner = MultiConditioner(config)
        self.embeddings = nn.ModuleList(nn.Embedding(self.codebook_size + 1, dim) for _ in range(self.n_codebooks))
        if config.cross_attention_cond_ids:
            self.to_cond_embed = nn.Linear(config.cond_dim, dim, bias=False)
        if config.prepend_cond_ids:
            self.to_prepend_embed = nn.Linear(config.cond_dim, dim, bias=False)
        self.transformer = ContinuousTransformer(
            dim,
            config.depth,
            dim_heads=config.head_dim,
            cross_attend=bool(config.cross_attention_cond_ids),
            cond_token_dim=dim if config.cross_attention_cond_ids else None,
            causal=True,
            ff_mult=config.ff_mult,
            checkpointing=config.checkpointing,
        )
        self.out_norm = LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, self.codebook_size, bias=False) for _ in range(self.n_codebooks))

    # --- conditioning ------------------------------------------------------------------------------
    def conditioning(self, values: Mapping[str, Sequence[Any]]) -> Conditioning:
        """Cross-attention tokens and masks, and prepended tokens, from one value per item for each
        conditioner (`values[id]` or `values[field]`), all cond_dim wide."""
        cross_ids, prepend_ids = self.config.cross_attention_cond_ids, self.config.prepend_cond_ids
        outputs = self.conditioner(values, list(dict.fromkeys((*cross_ids, *prepend_ids))))
        cond: Conditioning = {"cross_attn_cond": None, "cross_attn_mask": None, "prepend_cond": None}
        if cross_ids:
            cond["cross_attn_cond"], cond["cross_attn_mask"] = joined_tokens(outputs, cross_ids)
        if prepend_ids:
            cond["prepend_cond"] = torch.cat([outputs[i][0] for i in prepend_ids], dim=1)
        return cond

    @staticmethod
    def null_conditioning(cond: Conditioning, drop: Tensor | None = None) -> Conditioning:
        """`cond` with the cross-attention tokens of the samples in `drop` (B,) bool (all if None) zeroed."""
        tokens = cond["cross_attn_cond"]
        return dict(cond) if tokens is None else {**cond, "cross_attn_cond": null_tokens(tokens, drop)}

    def prepended(self, cond: Conditioning) -> int:
        """How many tokens the conditioning puts before the codes."""
        tokens = cond["prepend_cond"]
        return 0 if tokens is None else tokens.shape[1]

    # --- the network -------------------------------------------------------------------------------
    def logits(self, inputs: Tensor, cond: Conditioning, cache: KVCache | None = None) -> Tensor:
        """inputs (B, K, S) token ids (special where no code) -> logits (B, K, S, codebook_size) of the
        next position. With a `cache`, inputs continue the sequence the cache holds; the prepended
        condition goes in front on the first call only."""
        dtype = self.heads[0].weight.dtype
        x = sum(embedding(inputs[:, k]) for k, embedding in enumerate(self.embeddings))
        prepend, context = None, None
        if cond["prepend_cond"] is not None and (cache is None or cache.length == 0):
            prepend = self.to_prepend_embed(cond["prepend_cond"].to(dtype))
        if cond["cross_attn_cond"] is not None:
            context = self.to_cond_embed(cond["cross_attn_cond"].to(dtype))
        h = self.transformer(
            x, prepend_embeds=prepend, context=context, context_mask=cond["cross_attn_mask"], cache=cache
        )
        h = self.out_norm(h[:, 0 if prepend is None else prepend.shape[1] :])
        return torch.stack([head(h) for head in self.heads], dim=1)

    def forward(self, inputs: Tensor, values: Mapping[str, Sequence[Any]]) -> Tensor:
        return self.logits(inputs, self.conditioning(values))

    # --- training ----------------------------------------------------------------------------------
    def loss(
        self,
        codes: Tensor,
        mask: Tensor | None,
        values: Mapping[str, Sequence[Any]],
        keep: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the next code, per codebook over its real positions (pattern fillers and
        padded frames excluded), averaged over codebooks. codes (B, K, T) integers; mask (B, T) True on
        real frames; keep (B,) bool, False where the sample's cross-attention condition is dropped."""
        self._check_codes(codes)
        batch, n_codebooks, frames = codes.shape
        pattern = self.config.pattern
        real = codes.new_ones((batch, frames), dtype=torch.bool) if mask is None else mask.bool()
        real = real[:, None].expand(-1, n_codebooks, -1)
        targets = patterns.interleave(torch.where(real, codes.long(), self.special), pattern, self.special)
        weight = patterns.interleave(real, pattern, False)
        start = targets.new_full((batch, n_codebooks, 1), self.special)
        cond = self.conditioning(values)
        if keep is not None:
            cond = self.null_conditioning(cond, ~keep.to(targets.device))
        logits = self.logits(torch.cat([start, targets[..., :-1]], dim=-1), cond).float()
        ce = F.cross_entropy(logits.flatten(0, 2), torch.where(weight, targets, 0).flatten(), reduction="none").view_as(
            targets
        )
        per_codebook = (ce * weight).sum(dim=(0, 2)) / weight.sum(dim=(0, 2)).clamp(min=1)
        loss = per_codebook.mean()
        hits = (logits.argmax(-1) == targets) & weight
        accuracy = hits.sum() / weight.sum().clamp(min=1)
        dropped = torch.zeros(()) if keep is None else (~keep).float().mean()
        ce_value, accuracy_value, dropped_value = torch.stack(
            [loss.detach(), accuracy.float(), dropped.to(loss.device)]
        ).tolist()
        return loss, {"ce": ce_value, "accuracy": accuracy_value, "cfg_dropped": dropped_value}

    def _check_codes(self, codes: Tensor) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks or codes.is_floating_point():
            raise ValueError(
                f"codes must be integers shaped (batch, {self.n_codebooks}, frames), got {codes.dtype} "
                f"{tuple(codes.shape)}"
            )

    # --- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        values: Mapping[str, Sequence[Any]],
        frames: int,
        uniforms: Tensor,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        cfg_scale: float = 1.0,
        use_cache: bool = True,
    ) -> Tensor:
        """Codes (B, K, frames) int64, one sequence position per step. `uniforms` (B, S, K) in [0, 1)
        (S = the pattern's sequence length) decide every draw, so a sample depends on its own row
        alone. cfg_scale != 1 runs conditioned and null rows as one batch and draws from
        null + (cond - null) * scale of the logits. Without the cache each step recomputes the prefix
        (the reference the cached path is tested against). Train/eval mode is the caller's."""
        pattern, n_codebooks = self.config.pattern, self.n_codebooks
        length = patterns.sequence_length(pattern, n_codebooks, frames)
        batch = uniforms.shape[0]
        if uniforms.shape != (batch, length, n_codebooks):
            raise ValueError(f"uniforms must be ({batch}, {length}, {n_codebooks}), got {tuple(uniforms.shape)}")
        valid = patterns.valid(pattern, n_codebooks, frames, uniforms.device)
        cond = self.conditioning(values)
        guided = cfg_scale != 1.0 and cond["cross_attn_cond"] is not None
        if guided:
            cond = {
                key: None if value is None else value.repeat(2, *[1] * (value.dim() - 1)) for key, value in cond.items()
            }
            cond["cross_attn_cond"] = null_tokens(
                cond["cross_attn_cond"], torch.arange(2 * batch, device=uniforms.device) >= batch
            )
        rows = 2 * batch if guided else batch
        sequence = torch.full((rows, n_codebooks, length + 1), self.special, dtype=torch.long, device=uniforms.device)
        cache = KVCache(self.config.depth, self.prepended(cond) + length) if use_cache else None
        for step in range(length):
            inputs = sequence[..., step : step + 1] if cache is not None else sequence[..., : step + 1]
            logits = self.logits(inputs, cond, cache)[:, :, -1].float()
            if guided:
                conditioned, null = logits.chunk(2)
                logits = null + (conditioned - null) * cfg_scale
            tokens = sample_tokens(logits.flatten(0, 1), uniforms[:, step].flatten(), temperature, top_k, top_p)
            tokens = torch.where(valid[:, step], tokens.view(batch, n_codebooks), self.special)
            sequence[..., step + 1] = tokens.repeat(rows // batch, 1)
        return patterns.deinterleave(sequence[:batch, :, 1:], pattern, frames)


def sample_tokens(logits: Tensor, uniforms: Tensor, temperature: float, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """One token per row of logits (N, V), drawn by inverse CDF with uniforms (N,) in [0, 1) from the
    softmax of logits / temperature restricted to the top_k largest (0: all) and to the smallest set
    whose probability reaches top_p (0: all); temperature 0 takes the most likely token."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    probs, order = probs.sort(dim=-1, descending=True, stable=True)
    if 0 < top_k < probs.shape[-1]:
        probs[:, top_k:] = 0.0
    if top_p > 0.0:
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each
        probs = torch.where(before < top_p * probs.sum(dim=-1, keepdim=True), probs, 0.0)
    cdf = probs.cumsum(dim=-1)
    position = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True)
    return order.gather(-1, position.clamp(max=probs.shape[-1] - 1)).squeeze(-1)


def _resolved(configured: int | None, given: int | None, name: str) -> int:
    """The config's value wins (the experiment checked it equals the autoencoder's); `given` fills a null."""
    if configured is not None:
        if given is not None and given != configured:
            raise ValueError(f"{name} {given} given, but the config sets {configured}")
        return configured
    if given is None:
        raise ValueError(f"{name} is null in the config and was not given (the autoencoder's)")
    return given
