"""A tiny T5 encoder and tokenizer that a test builds and saves itself (transformers and tokenizers,
offline): the directory layout of a real T5 (`save_pretrained`: config.json, model.safetensors,
tokenizer.json, tokenizer_config.json), a few thousand parameters."""

from __future__ import annotations

import json
from pathlib import Path

# SentencePiece-style pieces ("▁" starts a word), as a T5 tokenizer reads them; ids 0-2 are T5's.
WORDS = ["<pad>", "</s>", "<unk>", "▁a", "▁soft", "▁loud", "▁piano", "▁drum", "▁loop", "▁bell", "▁organ", "▁slow"]


def write_tiny_t5(directory: Path, d_model: int = 16, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer T5 encoder of width `d_model` and its tokenizer in `directory`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.Unigram([(word, -1.0) for word in WORDS], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    fast.save_pretrained(str(directory))
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(WORDS),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
    )
    T5EncoderModel(config).save_pretrained(str(directory))
    return directory


def write_t5_config(directory: Path, d_model: int) -> Path:
    """Only the config.json of a T5 of width `d_model` (enough to build a t5 conditioner's layers)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": d_model}), encoding="utf-8")
    return directory
