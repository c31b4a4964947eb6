"""`pipeline install-profile`: the checkout's Snakemake profiles where a bare `--profile NAME` finds them.

Every test points XDG_CONFIG_HOME (and HOME) at a temporary directory, so nothing is written to the
user's own ~/.config. The last two run Snakemake with the installed profiles from a directory outside
the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.audio.demo import write_demo_data
from pipeline.profiles import available_profiles
from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT
from tests.slurm import SLURM_TEST_FLAGS

SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
PROFILES = REPO_ROOT / "profiles"


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    """XDG_CONFIG_HOME of the test (HOME too, in case anything falls back to ~/.config)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def install(*arguments: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "install-profile", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
    )


def installed(config_home: Path, name: str) -> Path:
    return config_home / "snakemake" / name / "config.yaml"


def test_the_checkout_has_the_local_and_slurm_profiles():
    assert available_profiles() == ["local", "slurm"]


def test_installs_the_slurm_profile_by_default_into_the_user_config_dir(config_home, tmp_path):
    result = install(cwd=tmp_path)  # from anywhere: the checkout is found from the package
    assert result.returncode == 0, result.stderr
    target = installed(config_home, "slurm")
    assert target.is_file()
    assert f"profile 'slurm' installed: {target}" in result.stdout
    assert "snakemake --profile slurm" in result.stdout
    text = target.read_text(encoding="utf-8")
    original = (PROFILES / "slurm" / "config.yaml").read_text(encoding="utf-8")
    assert text.endswith(original)  # the checkout's profile, behind a header
    settings = yaml.safe_load(text)
    assert settings["snakefile"] == str(REPO_ROOT / "Snakefile")
    assert {key: value for key, value in settings.items() if key != "snakefile"} == yaml.safe_load(original)
    header = text[: -len(original)]
    assert str(PROFILES / "slurm" / "config.yaml") in header and "--force" in header


def test_without_xdg_config_home_it_installs_into_dot_config(config_home, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    result = install("local")
    assert result.returncode == 0, result.stderr
    assert (Path(os.environ["HOME"]) / ".config" / "snakemake" / "local" / "config.yaml").is_file()
    assert not config_home.exists()


def test_a_second_install_changes_nothing(config_home):
    assert install("slurm").returncode == 0
    target = installed(config_home, "slurm")
    before = target.stat()
    again = install("slurm")
    assert again.returncode == 0, again.stderr
    assert f"profile 'slurm' already installed (identical): {target}" in again.stdout
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not even rewritten


def test_a_different_profile_of_that_name_is_kept_unless_forced(config_home):
    target = installed(config_home, "slurm")
    target.parent.mkdir(parents=True)
    mine = "# my own cluster's profile\nexecutor: slurm\njobs: 5\n"
    target.write_text(mine, encoding="utf-8")
    neighbour = target.parent / "config.v8+.yaml"
    neighbour.write_text("jobs: 7\n", encoding="utf-8")

    refused = install("slurm")
    assert refused.returncode == 1
    assert str(target) in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_text(encoding="utf-8") == mine

    forced = install("slurm", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"profile 'slurm' installed: {target}" in forced.stdout
    assert target.read_text(encoding="utf-8").endswith((PROFILES / "slurm" / "config.yaml").read_text("utf-8"))
    assert neighbour.read_text(encoding="utf-8") == "jobs: 7\n"  # other files there are left alone
    assert install("slurm").returncode == 0  # and the forced copy is now the identical one


def test_a_directory_where_the_file_goes_is_refused_even_with_force(config_home):
    target = installed(config_home, "local")
    target.mkdir(parents=True)
    refused = install("local", "--force")
    assert refused.returncode == 1
    assert str(target) in refused.stderr and "not a file" in refused.stderr
    assert target.is_dir()


def test_an_unknown_profile_lists_the_known_ones(config_home):
    result = install("slrum")
    assert result.returncode == 1
    assert "no profile 'slrum'" in result.stderr
    assert "profiles here: local, slurm" in result.stderr
    assert not config_home.exists()  # nothing written


def test_dest_installs_elsewhere(config_home, tmp_path):
    destination = tmp_path / "site" / "snakemake"
    result = install("local", "--dest", str(destination))
    assert result.returncode == 0, result.stderr
    target = destination / "local" / "config.yaml"
    assert f"profile 'local' installed: {target}" in result.stdout
    assert yaml.safe_load(target.read_text(encoding="utf-8"))["snakefile"] == str(REPO_ROOT / "Snakefile")
    assert not config_home.exists()


def snakemake_elsewhere(directory: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Snakemake run in `directory` (outside the checkout), with the environment of the test."""
    assert not directory.resolve().is_relative_to(REPO_ROOT)
    return subprocess.run([SNAKEMAKE, *arguments], capture_output=True, text=True, cwd=directory, env=os.environ.copy())


@pytest.mark.slow
def test_the_installed_slurm_profile_plans_the_workflow_from_another_directory(config_home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "audio").mkdir()  # a dry run plans the checkpoint without reading audio
    experiment = tmp_path / "exp.yaml"
    paths = {"audio_dir": str(tmp_path / "audio"), "work_dir": str(tmp_path / "work")}
    experiment.write_text(yaml.safe_dump({"extends": str(DEMO_EXPERIMENT), "paths": paths}), encoding="utf-8")
    arguments = ("--profile", "slurm", "-n", *SLURM_TEST_FLAGS, "--config", f"experiment={experiment}")

    not_installed = snakemake_elsewhere(elsewhere, *arguments)
    assert not_installed.returncode != 0  # no profile named slurm where Snakemake looks
    assert str(config_home / "snakemake") in not_installed.stderr

    assert install("slurm").returncode == 0
    result = snakemake_elsewhere(elsewhere, *arguments)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Using profile slurm for setting default command line arguments." in output
    assert f"Snakefile: {REPO_ROOT / 'Snakefile'}" in output  # the installed profile's `snakefile:`
    assert f"Working directory: {elsewhere}" in output
    stats = output.partition("Job stats:")[2].partition("\ntotal")[0].splitlines()[3:]
    planned = {line.split()[0]: int(line.split()[1]) for line in stats}
    # Up to the plan checkpoint: the per-shard jobs are added once the plan exists.
    assert planned == {
        "plan": 1,
        "shard_summary": 1,
        "train_autoencoder": 1,
        "index": 1,
        "train_model": 1,
        "sample_audio": 1,
        "report_autoencoder_training": 1,
        "report_latents": 1,
        "report_training": 1,
        "report_samples": 1,
        "all": 1,
    }
    # A dry run writes no output: the work dir (Snakemake's working directory) holds only its .snakemake.
    assert [path.name for path in (tmp_path / "work").iterdir()] == [".snakemake"]


@pytest.mark.slow
def test_the_installed_local_profile_runs_a_stage_from_another_directory(config_home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_demo_data(elsewhere / "audio", seed=1, total_seconds=8)
    # Relative paths are taken from the directory Snakemake runs in, the experiment file's too.
    document = {
        "extends": str(DEMO_EXPERIMENT),
        "name": "elsewhere",
        "paths": {"audio_dir": "audio", "work_dir": "work"},
    }
    (elsewhere / "exp.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    assert install("local").returncode == 0

    result = snakemake_elsewhere(elsewhere, "--profile", "local", "shard", "--config", "experiment=exp.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Using profile local for setting default command line arguments." in output
    shards = elsewhere / "work" / "shards"
    assert (shards / "plan.json").is_file() and (shards / "summary.json").is_file()
    assert sorted(path.name for path in shards.glob("shard-*.tar")) == ["shard-000000.tar"]
    assert (elsewhere / ".snakemake").is_dir()  # Snakemake's own records are where it ran
    again = snakemake_elsewhere(elsewhere, "--profile", "local", "shard", "--config", "experiment=exp.yaml")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
