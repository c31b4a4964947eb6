"""The `t5` text conditioner: stable-audio-tools' `T5Conditioner` on a local T5 directory.

A prompt is tokenized to exactly `max_length` tokens (cut when longer, padded when shorter: SAT's
`truncation=True, padding="max_length"`), encoded by the frozen T5 encoder, cast to float32, projected
by `proj_out` (a linear layer when the encoder's width is not `cond_dim` or `project_out` is set, else
the identity, as SAT) and zeroed where the attention mask says padding. The mask goes to the backbone
(`mask_padding: true`) or is all true (`false`: Stable Audio Open's training, whose DiT drops it).
A missing prompt (None) gives the null: zero tokens.

The encoder is not a submodule: its weights are in no state dict (SAT keeps it out the same way), the
optimizer, the EMA copy and the export never see it, and one loaded copy per (directory, dtype,
device) is shared by every model in the process. It is loaded on first use, so a run that trains on
pre-computed embeddings (`TextEmbeddings` as the values) never loads it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config.registry import register
from pipeline.errors import UserFacingError
from pipeline.models.conditioners import Conditioner
from pipeline.models.t5_config import T5ConditionerConfig

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_loaded: dict[tuple[str, str, str], tuple[Any, nn.Module]] = {}  # (directory, dtype, device) -> (tokenizer, encoder)


@dataclass(frozen=True)
class TextEmbeddings:
    """The encoder's output for a batch of prompts, before `proj_out`: tokens (B, L, width) float and
    the attention mask (B, L) bool; what a pre-computed store gives instead of the prompts."""

    tokens: torch.Tensor
    mask: torch.Tensor


def encoder_width(model_dir: Path, conditioner_id: str) -> int:
    """`d_model` of the T5 config in `model_dir` (read as JSON: no transformers import)."""
    config = model_dir / "config.json"
    try:
        return int(json.loads(config.read_text(encoding="utf-8"))["d_model"])
    except FileNotFoundError:
        raise UserFacingError(
            f"conditioner '{conditioner_id}' (t5): {config} not found; model_dir must be a local T5 directory "
            "as save_pretrained writes it (config.json, weights, tokenizer files)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserFacingError(f"conditioner '{conditioner_id}' (t5): {config}: no T5 d_model ({error})") from None


def load_text_encoder(model_dir: Path, dtype: str, device: torch.device) -> tuple[Any, nn.Module]:
    """(tokenizer, frozen encoder in eval mode) from `model_dir`, loaded once per process and device."""
    key = (str(model_dir.resolve()), dtype, str(device))
    if key not in _loaded:
        try:
            from transformers import AutoTokenizer, T5EncoderModel
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise UserFacingError(
                "the t5 conditioner needs transformers and tokenizers: pip install -e '.[text]'"
            ) from None
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            # Loaded in float32 and cast whole, as SAT does: from_pretrained(dtype=float16) would keep T5's
            # feed-forward output layers (`wo`) in float32, and the embeddings would differ from SAT's.
            encoder = T5EncoderModel.from_pretrained(str(model_dir), local_files_only=True).to(DTYPES[dtype])
        except (OSError, ValueError) as error:
            raise UserFacingError(f"{model_dir}: cannot load a T5 encoder and tokenizer: {error}") from None
        _loaded[key] = (tokenizer, encoder.to(device).eval().requires_grad_(False))
    return _loaded[key]


@register("conditioner", "t5", config=T5ConditionerConfig)
class T5Conditioner(Conditioner):
    def __init__(self, config: T5ConditionerConfig, output_dim: int):
        super().__init__(config, output_dim)
        self.model_dir = Path(config.model_dir).expanduser()
        self.text_width = encoder_width(self.model_dir, config.id)
        project = self.text_width != output_dim or config.project_out
        self.proj_out = nn.Linear(self.text_width, output_dim) if project else nn.Identity()
        # Follows the model's device (.to) without entering the state dict: where the encoder runs.
        self.register_buffer("anchor", torch.empty(0), persistent=False)

    def encode(self, texts: Sequence[str | None]) -> TextEmbeddings:
        """The frozen encoder's last hidden state (float32) and mask; a None prompt is all padding."""
        tokenizer, encoder = load_text_encoder(self.model_dir, self.config.dtype, self.anchor.device)
        present = [text is not None for text in texts]
        encoded = tokenizer(
            [text if text is not None else "" for text in texts],
            truncation=True,
            max_length=self.config.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        ids = encoded["input_ids"].to(self.anchor.device)
        mask = encoded["attention_mask"].to(self.anchor.device).bool()
        mask &= torch.tensor(present, device=mask.device)[:, None]
        with torch.no_grad(), torch.autocast(self.anchor.device.type, enabled=False):
            tokens = encoder(input_ids=ids, attention_mask=mask.long())["last_hidden_state"]
        return TextEmbeddings(tokens.float(), mask)

    def forward(self, values: Sequence[Any] | TextEmbeddings) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = values if isinstance(values, TextEmbeddings) else self.encode(self._texts(values))
        mask = embeddings.mask.to(self.anchor.device)
        tokens = self.proj_out(embeddings.tokens.to(self.anchor.device).float()) * mask[..., None]
        return tokens, (mask if self.config.mask_padding else torch.ones_like(mask))

    def _texts(self, values: Sequence[Any]) -> list[str | None]:
        bad = [value for value in values if value is not None and not isinstance(value, str)]
        if bad:
            raise ValueError(f"conditioner '{self.config.id}': prompts must be strings, got {bad[0]!r}")
        return list(values)
