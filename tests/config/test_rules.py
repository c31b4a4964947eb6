"""Issue 10's validation rules: ranges, booleans are not numbers, paths, ambiguous or ignored settings,
plan-size bounds and byte-size overflow, each reported at its YAML path with what was expected."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_experiment
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT


def _problems(overrides: list[str], path=DEMO_EXPERIMENT) -> dict[str, str]:
    """Problems of the demo experiment with `overrides`, by dotted path -> message."""
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, overrides, base_dir=REPO_ROOT)
    return {problem.path: problem.message for problem in caught.value.problems}


def _loads(overrides: list[str]) -> None:
    load_experiment(DEMO_EXPERIMENT, overrides, base_dir=REPO_ROOT)


FSQ = ["autoencoder.model.bottleneck={type: fsq, levels: [8, 5, 5, 5]}", "autoencoder.model.encoder.latent_dim=16"]


# --- ranges -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("betas", ["[1.0, 0.99]", "[0.9, 1.0]", "[-0.1, 0.99]", "[0.9, 1.5]"])
def test_adamw_betas_each_in_zero_one(betas):
    problems = _problems([f"autoencoder.training.betas={betas}"])
    assert list(problems) in (["autoencoder.training.betas[0]"], ["autoencoder.training.betas[1]"])
    assert any(fragment in next(iter(problems.values())) for fragment in ("must be < 1", "must be >= 0"))


def test_adamw_betas_in_range_load():
    _loads(["autoencoder.training.betas=[0.0, 0.999]"])


@pytest.mark.parametrize("levels, at", [("[1]", "levels[0]"), ("[8, 0, 5]", "levels[1]"), ("[-3]", "levels[0]")])
def test_fsq_levels_at_least_two(levels, at):
    problems = _problems([FSQ[0].replace("[8, 5, 5, 5]", levels), FSQ[1], "train="])
    assert problems == {f"autoencoder.model.bottleneck.{at}": problems[f"autoencoder.model.bottleneck.{at}"]}
    assert "must be >= 2" in problems[f"autoencoder.model.bottleneck.{at}"]


def test_fsq_codebook_must_fit_int32_codes():
    problems = _problems([FSQ[0].replace("[8, 5, 5, 5]", "[65536, 65536, 2]"), FSQ[1], "train="])
    message = problems["autoencoder.model.bottleneck.levels"]
    assert "8589934592 entries" in message and "int32" in message
    _loads([FSQ[0].replace("[8, 5, 5, 5]", "[65536, 32768]"), FSQ[1], "train="])  # 2^31 codes: indices fit int32


def test_rvq_codebook_bounded():
    problems = _problems(["autoencoder.model.bottleneck={type: rvq, codebook_size: 4294967296}", FSQ[1], "train="])
    assert "must be <= 1048576" in problems["autoencoder.model.bottleneck.codebook_size"]


@pytest.mark.parametrize(
    "overrides, path, fragment",
    [
        (
            ["autoencoder.model.encoder.c_mults=[1, 2, 4, 1000]", "autoencoder.model.decoder.c_mults=[1, 2, 4, 1000]"],
            "autoencoder.model.encoder.c_mults[3]",
            "must be <= 64",
        ),
        (["autoencoder.model.encoder.channels=2048"], "autoencoder.model.encoder.c_mults", "16384 channels"),
        (["autoencoder.model.encoder.channels=100000"], "autoencoder.model.encoder.channels", "must be <= 4096"),
        (["autoencoder.model.decoder.latent_dim=100000"], "autoencoder.model.decoder.latent_dim", "must be <= 4096"),
        (
            [
                "autoencoder.model.encoder.strides=[64, 64, 64, 64]",
                "autoencoder.model.decoder.strides=[64, 64, 64, 64]",
            ],
            "autoencoder.model.encoder.strides",
            "downsample by 16777216",
        ),
        (
            ["autoencoder.model.encoder.strides=[2, 4, 4, 100000]"],
            "autoencoder.model.encoder.strides[3]",
            "must be <= 64",
        ),
        (["autoencoder.model.encoder.c_mults=" + str([1] * 17)], "autoencoder.model.encoder.c_mults", "at most 16"),
    ],
    ids=["c_mult", "block-width", "channels", "latent-dim", "downsampling", "stride", "depth"],
)
def test_absurd_widths_and_depths(overrides, path, fragment):
    problems = _problems(overrides)
    assert path in problems and fragment in problems[path], problems


# --- booleans are not numbers, numbers are not strings ----------------------------------------------------


@pytest.mark.parametrize(
    "override, path",
    [
        ("data.channels=true", "data.channels"),
        ("pre_encode.batch_size=true", "pre_encode.batch_size"),
        ("seed=false", "seed"),
        ("data.min_item_seconds=true", "data.min_item_seconds"),
        ("data.shard.max_bytes=true", "data.shard.max_bytes"),
        ("autoencoder.training.betas=[true, 0.9]", "autoencoder.training.betas[0]"),
        ("data.codec={type: flac, bits: true}", "data.codec.bits"),
        ("resources.train.gpus=true", "resources.train.gpus"),
    ],
)
def test_booleans_are_not_numbers(override, path):
    problems = _problems([override])
    assert list(problems) == [path] and "got the boolean" in problems[path], problems


@pytest.mark.parametrize(
    "override, path, fragment",
    [
        ("seed='3'", "seed", "expected an integer, got the string '3'"),
        ("data.max_item_seconds='10'", "data.max_item_seconds", "expected a number"),
        ("pre_encode.store_scale=1", "pre_encode.store_scale", "boolean"),
        ("autoencoder.model.decoder.final_tanh='yes'", "autoencoder.model.decoder.final_tanh", "boolean"),
        ("name=123", "name", "string"),
    ],
)
def test_scalars_are_their_own_kind(override, path, fragment):
    problems = _problems([override])
    assert list(problems) == [path] and fragment in problems[path], problems


def test_integral_floats_and_byte_size_strings_still_work():
    experiment = load_experiment(DEMO_EXPERIMENT, ["seed=3.0", "data.shard.max_bytes=2.5e9", "data.max_item_seconds=5"])
    assert experiment.seed == 3 and experiment.data.shard.max_bytes == 2_500_000_000
    assert experiment.data.max_item_seconds == 5.0


# --- paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["paths.audio_dir", "paths.work_dir"])
@pytest.mark.parametrize("value", ["''", "'  '"])
def test_empty_paths_are_rejected(key, value):
    problems = _problems([f"{key}={value}"])
    assert "must not be empty" in problems[key]


def test_null_audio_dir_says_a_path_is_expected():
    assert "expected a file or folder path" in _problems(["paths.audio_dir="])["paths.audio_dir"]


@pytest.mark.parametrize("work_dir", ["{audio}", "{audio}/results/run", "{audio}/x/../y"])
def test_work_dir_inside_audio_dir(tmp_path, work_dir):
    audio = tmp_path / "audio"
    problems = _problems([f"paths.audio_dir={audio}", f"paths.work_dir={work_dir.format(audio=audio)}"])
    assert list(problems) == ["paths.work_dir"]
    assert "inside audio_dir" in problems["paths.work_dir"] and "listed as input" in problems["paths.work_dir"]


def test_work_dir_inside_audio_dir_through_a_symlink(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "audio")
    problems = _problems([f"paths.audio_dir={tmp_path / 'audio'}", f"paths.work_dir={tmp_path / 'link' / 'work'}"])
    assert "inside audio_dir" in problems["paths.work_dir"]


def test_work_dir_beside_audio_dir_and_audio_dir_inside_work_dir_are_fine(tmp_path):
    _loads([f"paths.audio_dir={tmp_path / 'audio'}", f"paths.work_dir={tmp_path / 'audio-work'}"])
    _loads([f"paths.audio_dir={tmp_path / 'run' / 'audio'}", f"paths.work_dir={tmp_path / 'run'}"])


def test_relative_work_dir_inside_relative_audio_dir(write_yaml, tmp_path):
    path = write_yaml("exp.yaml", {"name": "x", "paths": {"audio_dir": "data", "work_dir": "data/../data/out"}})
    with pytest.raises(ConfigError, match="paths.work_dir: .* is inside audio_dir"):
        load_experiment(path, base_dir=tmp_path)


@pytest.mark.parametrize("key", ["paths.audio_dir", "paths.work_dir", "autoencoder.checkpoint"])
def test_path_component_over_255_bytes(key):
    overrides = [f"{key}=/data/{'x' * 256}/y"] + (["autoencoder.training="] if key == "autoencoder.checkpoint" else [])
    problems = _problems(overrides)
    assert "component of 256 bytes" in problems[key] and "255" in problems[key]


def test_path_with_a_nul_character():
    assert "NUL" in _problems(['paths.audio_dir="/data/a\\0b"'])["paths.audio_dir"]


# --- ambiguous or ignored settings ------------------------------------------------------------------------


def test_checkpoint_and_training_together_are_ambiguous(tmp_path):
    problems = _problems([f"autoencoder.checkpoint={tmp_path / 'vae.safetensors'}"])
    assert list(problems) == ["autoencoder.training"]
    assert (
        "autoencoder.checkpoint" in problems["autoencoder.training"] and "ambiguous" in problems["autoencoder.training"]
    )
    _loads([f"autoencoder.checkpoint={tmp_path / 'vae.safetensors'}", "autoencoder.training="])


@pytest.mark.parametrize(
    "bottleneck",
    ["{type: tanh}", "{type: identity}", "{type: rvq, codebook_size: 64}", "{type: fsq, levels: [4, 4]}"],
)
def test_store_scale_needs_a_vae(bottleneck):
    problems = _problems(
        ["pre_encode.store_scale=true", f"autoencoder.model.bottleneck={bottleneck}", FSQ[1], "train="]
    )
    assert list(problems) == ["pre_encode.store_scale"] and "only a vae has" in problems["pre_encode.store_scale"]
    _loads(["pre_encode.store_scale=false", f"autoencoder.model.bottleneck={bottleneck}", FSQ[1], "train="])


def test_store_scale_with_a_vae_is_fine():
    _loads(["pre_encode.store_scale=true"])


# --- what would exhaust memory at plan time ---------------------------------------------------------------


@pytest.mark.parametrize("overlap", [9.999, 6.0, 5.01])
def test_segment_overlap_at_most_half_the_segment(overlap):
    message = _problems([f"data.segment_overlap_seconds={overlap}"])["data.segment_overlap_seconds"]
    assert "at most half of max_item_seconds (5 s)" in message and "segments" in message
    _loads(["data.segment_overlap_seconds=5.0"])


@pytest.mark.parametrize("seconds", [1e-6, 0.001, 0.049])
def test_max_item_seconds_has_a_floor(seconds):
    problems = _problems([f"data.max_item_seconds={seconds}", "data.min_item_seconds=0", "autoencoder=", "train="])
    assert "must be >= 0.05" in problems["data.max_item_seconds"]


def test_max_item_seconds_holds_a_few_latent_frames():
    # 16 kHz, 128 samples per latent frame: 4 frames are 32 ms; the encoder at 2048 makes it 512 ms.
    strides = "[8, 8, 8, 4]"
    overrides = [
        f"autoencoder.model.encoder.strides={strides}",
        f"autoencoder.model.decoder.strides={strides}",
        "data.min_item_seconds=0.1",
        "data.max_item_seconds=0.3",
        "autoencoder.training.crop_seconds=1",
    ]
    message = _problems(overrides)["data.max_item_seconds"]
    assert "at least 0.512 s (4 latent frames of 2048 samples at 16000 Hz), got 0.3" in message
    _loads(overrides[:-2] + ["data.max_item_seconds=0.6", "autoencoder.training.crop_seconds=1"])


# --- byte sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["9" * 400 + "GB", "9" * 400, "99999999999TiB"])
def test_overflowing_byte_size_is_a_field_error_reported_with_the_rest(size):
    problems = _problems([f"data.shard.max_bytes={size}", "seed=-1", "data.channels=3"])
    assert set(problems) == {"data.shard.max_bytes", "seed", "data.channels"}
    message = problems["data.shard.max_bytes"]
    assert ("too large" in message or "must be <= 1125899906842624" in message) and "infinity" not in message


def test_huge_integers_are_shown_by_size():
    problems = _problems(["seed=0x" + "f" * 5000])
    assert problems["seed"] == "must be <= 4294967295, got an integer of 20000 bits"
