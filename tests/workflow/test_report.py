"""`snakemake --report` after a whole run: the loss curves, the latent statistics and the sampled audio
are in the report (HTML with everything embedded, and the zip with the files beside report.html).

One run of the default target on a tiny experiment (the demo cut down: QUICK_TRAIN, QUICK_SAMPLE,
2 autoencoder steps) with the local profile, then both report kinds from the same run."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEMO_EXPERIMENT, QUICK_SAMPLE, REPO_ROOT, write_quick_experiment

SAMPLE = {**QUICK_SAMPLE, "count": 2}
REPORT_FILES = {  # file -> (category, subcategory), as workflow/rules/{report,sample}.smk mark them
    "training_loss.svg": ("Training", "diffusion model"),
    "autoencoder_loss.svg": ("Training", "autoencoder"),
    "latents.svg": ("Latents", "index"),
    "latents.html": ("Latents", "index"),
    "latents.csv": ("Latents", "index"),
    "samples.html": ("Samples", "listen"),
    "sample-0000.wav": ("Samples", "WAV files"),
    "sample-0001.wav": ("Samples", "WAV files"),
}


def snakemake(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    result = subprocess.run(
        [executable, "--profile", "profiles/local", "--cores", "2", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def planned_jobs(output: str) -> set[str]:
    """The rule names in a dry run's `Job stats` table."""
    table = output.partition("Job stats:")[2].partition("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


@pytest.mark.parametrize(
    "sections, expected",
    [
        ({}, {"report_training", "report_autoencoder_training", "report_latents", "report_samples"}),
        ({"train": None}, {"report_autoencoder_training", "report_latents"}),
        ({"train": None, "autoencoder": {"checkpoint": "AE", "training": None}}, {"report_latents"}),
        ({"train": None, "autoencoder": None}, set()),
    ],
    ids=["everything", "no-train", "pretrained-autoencoder", "shards-only"],
)
def test_the_default_target_reports_what_the_experiment_has(tmp_path, sections, expected):
    (tmp_path / "audio").mkdir()
    weights = tmp_path / "ae.safetensors"
    weights.write_bytes(b"weights")  # a dry run needs the file to exist, not to load
    if sections.get("autoencoder"):
        sections = {**sections, "autoencoder": {**sections["autoencoder"], "checkpoint": str(weights)}}
    paths = {"audio_dir": str(tmp_path / "audio"), "work_dir": str(tmp_path / "work")}
    document = {"extends": str(DEMO_EXPERIMENT), "paths": paths, **sections}
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(document))
    result = snakemake("--dry-run", "--config", f"experiment={experiment}")
    jobs = planned_jobs(result.stdout + result.stderr)
    assert "plan" in jobs and "all" in jobs  # the table was read
    assert {job for job in jobs if job.startswith("report")} == expected


def report_variable(page: str, name: str) -> Any:
    """A JSON value the report's page assigns (`var results = {...};`)."""
    values = re.findall(rf"^\s*var {name} = ([{{\[\"].*);\s*$", page, re.MULTILINE)  # JSON, not bundled JS
    assert len(values) == 1, f"{len(values)} JSON assignments of `var {name}` in the report"
    return json.loads(values[0])


def decode_data_uri(uri: str) -> bytes:
    assert uri.startswith("data:") and ";base64," in uri, uri[:80]
    return base64.b64decode(uri.partition(";base64,")[2])


def embedded_wavs(page: bytes) -> list[bytes]:
    found = re.findall(rb'<audio controls[^>]* src="data:audio/wav;base64,([^"]+)"', page)
    return [base64.b64decode(data) for data in found]


def by_name(results: dict[str, Any], categories: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """file name -> (category, subcategory, result entry)."""
    found = {}
    for category, subcategories in categories.items():
        for subcategory, paths in subcategories.items():
            for path in paths:
                found[Path(path).name] = (category, subcategory, results[path])
    return found


@pytest.mark.slow
def test_report_holds_the_loss_curves_latent_statistics_and_playable_samples(tmp_path):
    work = tmp_path / "work"
    experiment = write_quick_experiment(
        tmp_path,
        "reporttest",
        4,
        40,
        data={"shard": {"max_items": 4}},
        autoencoder={"training": {"log_every": 1}},
        sample=SAMPLE,
    )
    config = ("--config", f"experiment={experiment}")
    snakemake(*config)  # the default target: every stage and the report files
    for name in REPORT_FILES:
        folder = "samples" if name.endswith(".wav") else "report"
        assert (work / folder / name).is_file(), name

    html_report = tmp_path / "report.html"
    snakemake(*config, "--report", str(html_report))
    page = html_report.read_text(encoding="utf-8")
    results, categories = report_variable(page, "results"), report_variable(page, "categories")
    found = by_name(results, categories)
    assert {name: place[:2] for name, place in found.items()} == REPORT_FILES
    # Every file is embedded byte for byte, each with its caption; the figures as images.
    for name, (_, _, entry) in found.items():
        folder = "samples" if name.endswith(".wav") else "report"
        assert decode_data_uri(entry["data_uri"]) == (work / folder / name).read_bytes(), name
        assert entry["caption"].strip(), name
    assert found["training_loss.svg"][2]["mime_type"] == "image/svg+xml"
    assert b"held-out loss (eval_loss)" in decode_data_uri(found["training_loss.svg"][2]["data_uri"])
    assert found["latents.html"][2]["mime_type"] == "text/html"  # shown in a frame
    assert found["sample-0001.wav"][2]["labels"] == {"file": "sample-0001.wav", "seconds": 1.0, "seed": 0}
    # The samples page plays both WAVs (the report itself offers a WAV only as a download).
    assert found["samples.html"][2]["mime_type"] == "text/html"
    wavs = [(work / "samples" / f"sample-{n:04d}.wav").read_bytes() for n in range(2)]
    assert embedded_wavs(decode_data_uri(found["samples.html"][2]["data_uri"])) == wavs
    latents_table = decode_data_uri(found["latents.html"][2]["data_uri"]).decode()
    index = json.loads(subprocess.run(
        [sys.executable, "-m", "pipeline", "inspect", str(work / "latents" / "index.h5"), "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    ).stdout)  # fmt: skip
    assert f"<th>items</th><td>{index['items']:,}</td>" in latents_table
    assert f"<th>latent frames</th><td>{index['frames']:,}</td>" in latents_table
    assert "Training" in report_variable(page, "workflow_desc")

    zip_report = tmp_path / "report.zip"
    snakemake(*config, "--report", str(zip_report))
    with zipfile.ZipFile(zip_report) as archive:
        names = archive.namelist()
        assert "report/report.html" in names
        stored = {Path(name).name: name for name in names if name.startswith("report/data/raw/")}
        assert set(stored) == set(REPORT_FILES)
        assert archive.read(stored["sample-0000.wav"]) == wavs[0]
        assert embedded_wavs(archive.read(stored["samples.html"])) == wavs
        zipped = archive.read("report/report.html").decode("utf-8")
    zipped_results = report_variable(zipped, "results")
    assert {entry["data_uri"] for entry in zipped_results.values()} == {
        name.removeprefix("report/") for name in stored.values()
    }  # the page links the files beside it
