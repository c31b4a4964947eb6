"""The t5 conditioner on a tiny T5 encoder and tokenizer that the test builds and saves (offline):
SAT's fixed-length tokenization and padding mask, the projection, no encoder weights in the state
dict, the null prompt, and CFG dropout replacing the prompt by the null at rate p."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from pipeline.config.registry import build  # noqa: E402
from pipeline.errors import UserFacingError  # noqa: E402
from pipeline.models.diffusion.diffusion_config import DiffusionModelConfig  # noqa: E402
from pipeline.models.t5 import TextEmbeddings  # noqa: E402
from pipeline.models.t5_config import T5ConditionerConfig  # noqa: E402
from pipeline.train.diffusion import Drawer  # noqa: E402
from tests.text import write_tiny_t5  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

WIDTH = 16  # the tiny T5's d_model
PROMPTS = ["soft piano", "loud drum loop a bell organ slow", None]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5") / "tiny-t5", d_model=WIDTH)


def conditioner(t5_dir, output_dim: int = 8, **fields):
    config = T5ConditionerConfig(id="prompt", model_dir=t5_dir, max_length=6, dtype="float32", **fields)
    torch.manual_seed(0)
    return build("conditioner", config, output_dim=output_dim)


def test_prompts_become_max_length_tokens_zeroed_where_padded(t5_dir):
    module = conditioner(t5_dir)
    tokens, mask = module(PROMPTS)
    assert tokens.shape == (3, 6, 8) and tokens.dtype == torch.float32 and mask.dtype == torch.bool
    # "soft piano" + </s> = 3 tokens; the long prompt is cut to 6 (its </s> kept); None is all padding.
    assert mask.tolist() == [[True] * 3 + [False] * 3, [True] * 6, [False] * 6]
    assert torch.all(tokens[~mask] == 0) and torch.all(tokens[mask].abs().sum(-1) > 0)
    assert list(module.state_dict()) == ["proj_out.weight", "proj_out.bias"]  # no encoder weights


def test_the_mask_can_be_dropped_as_stable_audio_open_was_trained(t5_dir):
    masked, unmasked = conditioner(t5_dir), conditioner(t5_dir, mask_padding=False)
    tokens, mask = unmasked(PROMPTS)
    assert mask.all() and torch.equal(tokens, masked(PROMPTS)[0])  # padded tokens are still zeros


def test_projection_only_when_widths_differ_or_asked(t5_dir):
    same = conditioner(t5_dir, output_dim=WIDTH)
    assert isinstance(same.proj_out, torch.nn.Identity) and not list(same.state_dict())
    assert isinstance(conditioner(t5_dir, output_dim=WIDTH, project_out=True).proj_out, torch.nn.Linear)
    tokens, mask = same(PROMPTS[:1])
    embedded = same.encode(PROMPTS[:1])
    assert torch.equal(tokens, embedded.tokens * embedded.mask[..., None])


def test_precomputed_embeddings_give_what_the_encoder_gives(t5_dir):
    module = conditioner(t5_dir)
    embedded = module.encode(PROMPTS)
    stored = TextEmbeddings(embedded.tokens.clone(), embedded.mask.clone())
    for a, b in zip(module(stored), module(PROMPTS)):
        assert torch.equal(a, b)


def test_a_missing_directory_is_one_line(tmp_path):
    with pytest.raises(UserFacingError, match=r"conditioner 'prompt' \(t5\): .*config.json not found"):
        conditioner(tmp_path / "nowhere")


def test_prompts_must_be_text(t5_dir):
    with pytest.raises(ValueError, match="prompts must be strings, got 3"):
        conditioner(t5_dir)(["soft piano", 3])


def text_model(t5_dir, cfg_dropout: float = 0.25):
    config = DiffusionModelConfig.model_validate(
        {
            "type": "diffusion",
            "backbone": {"type": "dit", "embed_dim": 64, "depth": 1, "num_heads": 2, "cond_token_dim": 8,
                         "global_cond_dim": 8},
            "conditioners": [
                {"type": "t5", "id": "prompt", "model_dir": str(t5_dir), "max_length": 6, "dtype": "float32"},
                {"type": "number", "id": "seconds_total"},
            ],
            "cond_dim": 8,
            "cross_attention_cond_ids": ["prompt", "seconds_total"],
            "global_cond_ids": ["seconds_total"],
            "cfg_dropout": cfg_dropout,
        }
    )  # fmt: skip
    torch.manual_seed(0)
    return build("model", config, io_channels=4)


def test_cfg_dropout_swaps_in_the_null_prompt_at_rate_p(t5_dir):
    p = 0.25
    drawer = Drawer(seed=3, timestep_sampler="uniform", cfg_dropout=p)
    examples = [
        {"latents": torch.zeros(4, 2), "mask": torch.ones(2, dtype=torch.bool), "item": i, "epoch": 0,
         "seconds_start": 0.0, "seconds_total": 1.0, "key": f"k{i}", "metadata": {}}
        for i in range(4000)
    ]  # fmt: skip
    keep = np.asarray(drawer(examples)["keep"])
    assert abs((~keep).mean() - p) < 0.02  # 4000 draws: 3 standard deviations is 0.021
    model = text_model(t5_dir, cfg_dropout=p)
    values = {"prompt": ["soft piano", "loud drum", "bell", None], "seconds_total": [1.0, 2.0, 3.0, 4.0]}
    cond = model.conditioning(values)
    drop = torch.tensor([False, True, False, True])
    dropped = model.null_conditioning(cond, drop)
    assert torch.all(dropped["cross_attn_cond"][drop] == 0)
    assert torch.equal(dropped["cross_attn_cond"][~drop], cond["cross_attn_cond"][~drop])
    assert torch.equal(dropped["global_cond"], cond["global_cond"])  # the timing stays, as SAT
