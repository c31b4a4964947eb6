"""Set-up the benchmarks share: a demo experiment on generated audio, sharded, with autoencoder weights
the benchmark creates (random init: fine for throughput, meaningless latents)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from pipeline.audio.demo import write_demo_data
from pipeline.config import load_experiment
from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.layout import layout_of
from pipeline.models.autoencoder.checkpoints import save_autoencoder
from pipeline.models.autoencoder.model import Autoencoder
from pipeline.shards.plan import write_plan
from pipeline.shards.run import write_all_shards

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_EXPERIMENT = REPO_ROOT / "configs/experiments/demo.yaml"
DEMO_LM_EXPERIMENT = DEMO_EXPERIMENT.with_name("demo_lm.yaml")


def sharded_demo(
    work: Path, seconds: float, name: str, overrides: list[str], base: Path = DEMO_EXPERIMENT
) -> Experiment:
    """Demo audio under `work`, an experiment extending `base` (the demo, or the discrete demo), its plan
    and shards, and random-init weights."""
    write_demo_data(work / "audio", seed=7, total_seconds=seconds)
    document = {
        "extends": str(base),
        "name": name,
        "paths": {"audio_dir": str(work / "audio"), "work_dir": str(work / "work")},
    }
    (work / "bench.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    experiment = load_experiment(work / "bench.yaml", overrides)
    write_plan(experiment)
    write_all_shards(experiment, progress=False)
    save_random_weights(experiment)
    return experiment


def save_random_weights(experiment: Experiment) -> None:
    """Random-init autoencoder weights (seed 0), saved where train_autoencoder would put them."""
    torch.manual_seed(0)
    save_autoencoder(
        Autoencoder(experiment.autoencoder.model, experiment.data.sample_rate).eval(),
        layout_of(experiment).autoencoder_weights,
        stage_hash(experiment, "train_autoencoder"),
    )


# Bring-your-own autoencoders (issue 16), at the demo's 128 samples per latent frame and 16 latent dims:
# `import`: a 2-D spectrogram VAE from the tests' lab package (stft hop 64, two frames per latent frame);
# `encodec`: a tiny random EnCodec (hop 8, 4 codebooks) from a save_pretrained directory.
BYO_SPECTROGRAM = {
    "transform": {"type": "stft", "n_fft": 256, "hop_length": 64, "magnitude": "power", "exponent": 0.5},
    "encoder": {
        "_target_": "my_lab.models.SEANetEncoder2d",
        "in_channels": 2,
        "latent_dim": 32,
        "bins": 129,
        "width": 16,
    },
    "decoder": {
        "_target_": "my_lab.models.SEANetDecoder2d",
        "out_channels": 2,
        "latent_dim": 16,
        "bins": 129,
        "width": 16,
    },
    "bottleneck": {"type": "vae"},
}


def sharded_byo(work: Path, seconds: float, kind: str, overrides: list[str]) -> Experiment:
    """Demo audio under `work` encoded by a bring-your-own autoencoder (`import` or `encodec`, above):
    the experiment, its plan and shards, and random weights."""
    sys.path.insert(0, str(REPO_ROOT))  # the lab package and codec writer the tests use
    from tests.byo import byo_experiment, write_codec, write_lab

    write_demo_data(work / "audio", seed=7, total_seconds=seconds)
    if kind == "import":
        write_lab(work)
        model, sections = BYO_SPECTROGRAM, {"autoencoder": {"training": {"kl_weight": 0.0}}}
    else:
        model, sections = (
            {"type": "encodec", "path": str(write_codec(work / "encodec", "encodec")), "bandwidth": 32.0},
            {},
        )
    path = byo_experiment(work, work / "audio", model, pre_encode={}, **sections)
    experiment = load_experiment(path, overrides)
    if kind == "import":
        save_random_weights(experiment)
    return experiment


def write_t5(directory: Path, texts: list[str], d_model: int, layers: int, heads: int, d_ff: int) -> Path:
    """A randomly initialised T5 encoder of this geometry and a tokenizer over the words of `texts`,
    saved as a local T5 directory (save_pretrained), built offline: what a t5 conditioner loads."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    words = sorted({word for text in texts for word in text.split()})
    pieces = ["<pad>", "</s>", "<unk>", *(f"\u2581{word}" for word in words)]
    tokenizer = Tokenizer(models.Unigram([(piece, -1.0) for piece in pieces], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    fast.save_pretrained(str(directory))
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(pieces), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff, num_layers=layers, num_heads=heads
    )
    T5EncoderModel(config).save_pretrained(str(directory))
    return directory
