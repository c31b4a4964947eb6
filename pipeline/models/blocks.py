"""Transformer building blocks shared by the DiT and the LM: attention, rotary embedding, GLU
feed-forward, bias-free LayerNorm, adaLN, timestep Fourier features, and the key/value cache an
autoregressive model decodes with (`KVCache`: one new position per step attends to the cached ones).

Module names, parameter shapes, buffers and initialisation follow stable-audio-tools'
`models/transformer.py` (`ContinuousTransformer`, `TransformerBlock`, `Attention`, `FeedForward`,
`GLU`, `RotaryEmbedding`, `LayerNorm`) and `models/blocks.py` (`FourierFeatures`), so its
checkpoints load strictly. Unlike SAT, attention takes key padding masks (SAT ignores its masks)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

Tensor = torch.Tensor


class FourierFeatures(nn.Module):
    """Random Fourier features (cos, sin) of a scalar such as the diffusion time; `weight` is learned."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        if out_features % 2:
            raise ValueError(f"out_features must be even, got {out_features}")
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: Tensor) -> Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class LayerNorm(nn.Module):
    """LayerNorm with a learned `gamma` and a fixed zero `beta` buffer (SAT's bias-free LayerNorm;
    the buffer is persistent, so it is in the state dict)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], weight=self.gamma, bias=self.beta, eps=self.eps)


class RotaryEmbedding(nn.Module):
    """Rotary position angles for the first `dim` channels of each head (partial rotary, GPT-J style).
    `inv_freq` is a persistent buffer, as in SAT, so checkpoints carry it."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, seq_len: int, start: int = 0) -> Tensor:
        """(seq_len, rotated channels) angles of positions start, start + 1, ... in float32, whatever
        the autocast dtype."""
        positions = torch.arange(start, start + seq_len, device=self.inv_freq.device, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq.float()[None, :]
        return torch.cat((freqs, freqs), dim=-1)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate the first freqs.shape[-1] channels of x (..., seq, head_dim) in float32; the rest pass."""
    rot_dim = freqs.shape[-1]
    freqs = freqs[-x.shape[-2] :]
    rotated, passed = x[..., :rot_dim].float(), x[..., rot_dim:]
    rotated = rotated * freqs.cos() + rotate_half(rotated) * freqs.sin()
    return torch.cat((rotated.to(x.dtype), passed), dim=-1)


def attention_mask(
    key_mask: Tensor | None, causal: bool, q_len: int, k_len: int, device: torch.device
) -> Tensor | None:
    """Boolean sdpa mask (True: attend), broadcastable to (batch, heads, q_len, k_len), or None when
    all attend. A query with no allowed key would give NaN, which reaches real outputs through 0 * NaN
    in later layers, so such a query attends to every key (causal: to itself) instead. Causal masks
    are aligned bottom-right: the last query sees every key (a cache of earlier keys works)."""
    mask = None
    if key_mask is not None:
        mask = (key_mask | ~key_mask.any(dim=-1, keepdim=True))[:, None, None, :]
    if not causal:
        return mask
    offset = k_len - q_len
    lower = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(offset)
    return lower if mask is None else (mask & lower) | lower.triu(offset)


class AttentionCache:
    """One attention layer's keys and values so far, (batch, heads, positions, head_dim), in buffers
    allocated for `capacity` positions on first use. Cross-attention keeps the context's once."""

    def __init__(self, capacity: int):
        self.capacity, self.length = capacity, 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' keys and values; return every position's."""
        new = k.shape[-2]
        if self.keys is None or self.values is None:
            shape = (*k.shape[:-2], self.capacity, k.shape[-1])
            self.keys, self.values = k.new_empty(shape), v.new_empty(shape)
        if self.length + new > self.capacity:
            raise ValueError(f"the key/value cache holds {self.capacity} positions; {self.length + new} asked for")
        self.keys[..., self.length : self.length + new, :] = k
        self.values[..., self.length : self.length + new, :] = v
        self.length += new
        return self.keys[..., : self.length, :], self.values[..., : self.length, :]


class LayerCache:
    """A transformer block's caches: its self-attention and, when it cross-attends, the context's keys."""

    def __init__(self, capacity: int):
        self.self_attn = AttentionCache(capacity)
        self.cross_attn: tuple[Tensor, Tensor] | None = None


class KVCache:
    """Every block's cache and the number of positions seen (prepended tokens included). Made for one
    decoding: `capacity` positions at most, one batch (a CFG batch of conditioned and null rows too)."""

    def __init__(self, depth: int, capacity: int):
        self.layers = [LayerCache(capacity) for _ in range(depth)]
        self.length = 0


class Attention(nn.Module):
    """Multi-head attention: self (`to_qkv`) or cross (`to_q`, `to_kv` of `dim_context` channels; with
    fewer key/value heads than query heads each is shared, as SAT does), no biases, `to_out` zero-init."""

    def __init__(
        self,
        dim: int,
        dim_heads: int = 64,
        dim_context: int | None = None,
        causal: bool = False,
        zero_init_output: bool = True,
    ):
        super().__init__()
        dim_kv = dim if dim_context is None else dim_context
        self.num_heads, self.kv_heads, self.causal = dim // dim_heads, dim_kv // dim_heads, causal
        if self.kv_heads == 0 or self.num_heads % self.kv_heads or dim_kv % dim_heads:
            raise ValueError(f"{dim_kv} key/value channels do not split into heads of {dim_heads} sharing {dim}")
        if dim_context is None:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        else:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_kv, dim_kv * 2, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.to_out.weight)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        rotary: Tensor | None = None,
        key_mask: Tensor | None = None,
        causal: bool | None = None,
        cache: AttentionCache | LayerCache | None = None,
    ) -> Tensor:
        """x (batch, n, dim); context (batch, m, dim_context) for cross-attention; key_mask (batch, keys)
        True for keys that may be attended to; rotary angles apply to queries and keys (self-attention).
        `cache`: self-attention appends the new keys to an AttentionCache and attends to all of them
        (queries are the last n positions); cross-attention keeps the context's keys in a LayerCache."""
        if isinstance(cache, LayerCache) and cache.cross_attn is not None:
            q, (k, v) = _split_heads(self.to_q(x), self.num_heads), cache.cross_attn
        else:
            q, k, v = self._project(x, context)
        if rotary is not None:
            q, k = apply_rotary(q, rotary).to(v.dtype), apply_rotary(k, rotary).to(v.dtype)
        if isinstance(cache, AttentionCache):
            if key_mask is not None:
                raise ValueError("a key/value cache takes no key mask (pad at the end of a causal sequence)")
            k, v = cache.append(k, v)
        elif isinstance(cache, LayerCache):
            cache.cross_attn = (k, v)
        causal = (self.causal if causal is None else causal) and q.shape[-2] > 1
        if causal and key_mask is None and q.shape[-2] == k.shape[-2]:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # lets sdpa pick a fused kernel
        else:
            mask = attention_mask(key_mask, causal, q.shape[-2], k.shape[-2], q.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(batch, heads, n, head_dim) queries, keys and values; shared key/value heads repeated."""
        if hasattr(self, "to_qkv"):
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        else:
            q, (k, v) = self.to_q(x), self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q = _split_heads(q, self.num_heads)
        k, v = _split_heads(k, self.kv_heads), _split_heads(v, self.kv_heads)
        if self.kv_heads != self.num_heads:
            repeat = self.num_heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        return q, k, v


def _split_heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class GLU(nn.Module):
    """SwiGLU input half: one projection to value and gate, value * silu(gate)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.act = nn.SiLU()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * self.act(gate)


class FeedForward(nn.Module):
    """GLU then a zero-init linear; `ff` indices 0 and 2 as SAT's (1 and 3 are its conv-mode reshapes)."""

    def __init__(self, dim: int, mult: int = 4, zero_init_output: bool = True):
        super().__init__()
        inner = int(dim * mult)
        linear_out = nn.Linear(inner, dim)
        if zero_init_output:
            nn.init.zeros_(linear_out.weight)
            nn.init.zeros_(linear_out.bias)
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), linear_out, nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, GLU feed-forward. With `global_cond_dim`
    (adaLN) the self-attention and feed-forward branches are scaled, shifted and gated by the global
    condition (already embedded to 6 * dim by the transformer) plus a learned `to_scale_shift_gate`."""

    def __init__(
        self,
        dim: int,
        dim_heads: int = 64,
        cross_attend: bool = False,
        dim_context: int | None = None,
        global_cond_dim: int | None = None,
        causal: bool = False,
        ff_mult: int = 4,
        zero_init_branch_outputs: bool = True,
    ):
        super().__init__()
        dim_heads = min(dim_heads, dim)
        self.pre_norm = LayerNorm(dim)
        self.self_attn = Attention(dim, dim_heads, causal=causal, zero_init_output=zero_init_branch_outputs)
        self.cross_attend = cross_attend
        if cross_attend:
            self.cross_attend_norm = LayerNorm(dim)
            # Never causal: every query sees the whole context (SAT passes `causal` here, unused by its DiT).
            self.cross_attn = Attention(
                dim, dim_heads, dim_context=dim_context, zero_init_output=zero_init_branch_outputs
            )
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim, mult=ff_mult, zero_init_output=zero_init_branch_outputs)
        self.global_cond_dim = global_cond_dim
        if global_cond_dim is not None:
            self.to_scale_shift_gate = nn.Parameter(torch.randn(6 * dim) / dim**0.5)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        global_cond: Tensor | None = None,
        rotary: Tensor | None = None,
        mask: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x (batch, n, dim); mask (batch, n) and context_mask (batch, m): True for real tokens.
        `cache`: x is the next n positions of a sequence whose earlier ones the cache holds."""
        if self.global_cond_dim and global_cond is not None:
            return self._forward_adaln(x, context, global_cond, rotary, mask, context_mask, cache)
        self_cache = None if cache is None else cache.self_attn
        x = x + self.self_attn(self.pre_norm(x), rotary=rotary, key_mask=mask, cache=self_cache)
        x = self._cross(x, context, context_mask, cache)
        return x + self.ff(self.ff_norm(x))

    def _cross(
        self, x: Tensor, context: Tensor | None, context_mask: Tensor | None, cache: LayerCache | None = None
    ) -> Tensor:
        if context is None or not self.cross_attend:
            return x
        return x + self.cross_attn(self.cross_attend_norm(x), context=context, key_mask=context_mask, cache=cache)

    def _forward_adaln(
        self,
        x: Tensor,
        context: Tensor | None,
        global_cond: Tensor,
        rotary: Tensor | None,
        mask: Tensor | None,
        context_mask: Tensor | None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """SAT's adaLN: x * (1 + scale) + shift after the norm, branch output * sigmoid(1 - gate)."""
        modulation = (self.to_scale_shift_gate + global_cond).unsqueeze(1).chunk(6, dim=-1)
        scale_self, shift_self, gate_self, scale_ff, shift_ff, gate_ff = modulation
        h = self.pre_norm(x) * (1 + scale_self) + shift_self
        self_cache = None if cache is None else cache.self_attn
        x = x + self.self_attn(h, rotary=rotary, key_mask=mask, cache=self_cache) * torch.sigmoid(1 - gate_self)
        x = self._cross(x, context, context_mask, cache)
        h = self.ff_norm(x) * (1 + scale_ff) + shift_ff
        return x + self.ff(h) * torch.sigmoid(1 - gate_ff)


class ContinuousTransformer(nn.Module):
    """Transformer over continuous tokens: `project_in` (dim_in -> dim), optional prepended embeddings,
    rotary positions over the whole sequence (prepended tokens included), `layers`, `project_out`.
    `causal` makes every self-attention causal (for an LM); `global_cond_dim` turns on adaLN."""

    def __init__(
        self,
        dim: int,
        depth: int,
        *,
        dim_in: int | None = None,
        dim_out: int | None = None,
        dim_heads: int = 64,
        cross_attend: bool = False,
        cond_token_dim: int | None = None,
        global_cond_dim: int | None = None,
        causal: bool = False,
        ff_mult: int = 4,
        zero_init_branch_outputs: bool = True,
        checkpointing: bool = False,
    ):
        super().__init__()
        self.dim, self.depth, self.causal, self.checkpointing = dim, depth, causal, checkpointing
        self.layers = nn.ModuleList()  # first, so the state dict's key order is SAT's
        self.project_in = nn.Linear(dim_in, dim, bias=False) if dim_in is not None else nn.Identity()
        self.project_out = nn.Linear(dim, dim_out, bias=False) if dim_out is not None else nn.Identity()
        self.rotary_pos_emb = RotaryEmbedding(max(dim_heads // 2, 32))
        if global_cond_dim is not None:
            self.global_cond_embedder = nn.Sequential(
                nn.Linear(global_cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim * 6)
            )
        for _ in range(depth):
            block = TransformerBlock(
                dim,
                dim_heads,
                cross_attend=cross_attend,
                dim_context=cond_token_dim,
                global_cond_dim=global_cond_dim,
                causal=causal,
                ff_mult=ff_mult,
                zero_init_branch_outputs=zero_init_branch_outputs,
            )
            self.layers.append(block)

    def forward(
        self,
        x: Tensor,
        prepend_embeds: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        global_cond: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x (batch, n, dim_in) -> (batch, prepended + n, dim_out). mask (batch, n): True for real
        tokens (prepended ones always are); context_mask (batch, m) likewise for the context.
        With a `cache` (causal decoding, no mask), x continues the sequence the cache has seen: its
        positions (rotary angles) start there, and it attends to the cached keys and values."""
        x = self.project_in(x)
        if prepend_embeds is not None:
            x = torch.cat((prepend_embeds, x), dim=-2)
            mask = _prepend_mask(mask, prepend_embeds.shape[1])
        start = 0 if cache is None else cache.length
        rotary = self.rotary_pos_emb(x.shape[1], start)
        if global_cond is not None and hasattr(self, "global_cond_embedder"):
            global_cond = self.global_cond_embedder(global_cond)
        for number, layer in enumerate(self.layers):
            args = (x, context, global_cond, rotary, mask, context_mask)
            if cache is not None:
                x = layer(*args, cache=cache.layers[number])
            elif self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)
        if cache is not None:
            cache.length += x.shape[1]
        return self.project_out(x)


def _prepend_mask(mask: Tensor | None, length: int) -> Tensor | None:
    if mask is None:
        return None
    return torch.cat((mask.new_ones(mask.shape[0], length), mask), dim=1)
