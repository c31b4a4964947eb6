"""`train.init_from`: a fine-tune starts from a stable-audio-tools diffusion checkpoint's weights (or
our own export) at step 0 with a fresh optimizer, in its own run (the path enters the stage hash),
and a file that does not fit is refused before step 0, naming its keys."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import load_experiment, stage_hash
from pipeline.config.registry import build
from pipeline.errors import UserFacingError
from pipeline.train.diffusion import DiffusionFamily
from pipeline.train.distributed import DistEnv
from pipeline.train.stage import train_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models, shared cores

CPU = torch.device("cpu")


def sat_layout_file(experiment, path, seed: int = 7) -> dict[str, torch.Tensor]:
    """Random weights for the experiment's model, saved under stable-audio-tools' names; returns ours."""
    torch.manual_seed(seed)
    model = build("model", experiment.train.model, io_channels=experiment.autoencoder.model.latent_dim)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    ours = {key: value.clone() for key, value in model.state_dict().items()}
    sat = {("model.model." + k[len("model.") :] if k.startswith("model.") else k): v for k, v in ours.items()}
    save_file(sat, str(path))
    return ours


def test_a_fine_tune_starts_from_the_files_weights_at_step_0(train_experiment, tmp_path, capsys):
    plain = load_experiment(train_experiment())
    weights = tmp_path / "sao.safetensors"
    ours = sat_layout_file(plain, weights)
    tuned = load_experiment(train_experiment({"init_from": str(weights), "steps": 2}, name="tuned"))
    assert stage_hash(tuned, "train") != stage_hash(plain, "train")
    built = DiffusionFamily(tuned, DistEnv(), CPU).build()
    for key, value in built.state_dict().items():
        assert torch.equal(value, ours[key]), key
    result = train_stage(tuned, progress=False)
    out = capsys.readouterr().out
    assert result.resumed_from is None and result.step == 2 and "starting run" in out
    assert f"initial weights from {weights} (stable-audio-tools layout, loaded strictly)" in out


def test_a_file_that_does_not_fit_is_refused_before_step_0(train_experiment, tmp_path):
    plain = load_experiment(train_experiment())
    weights = tmp_path / "sao.safetensors"
    sat_layout_file(plain, weights)
    wider = load_experiment(
        train_experiment({"init_from": str(weights), "model": {"backbone": {"depth": 3}}}, name="wider")
    )
    with pytest.raises(UserFacingError, match=r"missing \(\d+\): model\.model\.transformer\.layers\.2\."):
        train_stage(wider, progress=False)


def test_init_from_is_a_diffusion_setting():
    from pydantic import ValidationError

    from pipeline.config.training import TrainConfig
    from tests.train.conftest import TINY_LM

    with pytest.raises(ValidationError) as caught:
        TrainConfig.model_validate({"model": TINY_LM, "init_from": "/models/x.safetensors"})
    (problem,) = caught.value.errors()
    assert problem["loc"] == ("init_from",) and "diffusion models, not train.model.type lm" in problem["msg"]
