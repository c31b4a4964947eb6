"""The shard stage end to end on the odd corpus: nothing lost, readable, faithful, deterministic."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from pipeline.audio.convert import convert_channels, resample
from pipeline.shards.plan import write_plan
from pipeline.shards.run import write_all_shards
from tests.shards.conftest import LONG_NAME


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, corpus):
    """The corpus planned and sharded once for the read-only tests of this module."""
    from pipeline.config import load_experiment
    from tests.shards.conftest import experiment_file

    directory = tmp_path_factory.mktemp("sharded")
    experiment = load_experiment(experiment_file(directory, corpus[0], directory / "work"))
    write_plan(experiment)
    summary = write_all_shards(experiment, workers=1, progress=False)
    shards = experiment.work_dir / "shards"
    plan = json.loads((shards / "plan.json").read_text())  # the documented format, as on disk
    manifests = [json.loads((shards / f"{s['name']}.json").read_text()) for s in plan["shards"]]
    rejected = [json.loads(line) for line in (shards / "rejected.jsonl").read_text().splitlines()]
    return experiment, plan, manifests, rejected, summary


def test_every_input_is_accounted_for(sharded, corpus):
    _, plan, manifests, rejected, summary = sharded
    _, expected = corpus
    in_shards = {item["relpath"] for manifest in manifests for item in manifest["items"]}
    rejected_by_path = {entry["relpath"]: entry for entry in rejected}
    ignored_by_path = {entry["relpath"]: entry for entry in plan["ignored"]}
    for relpath, expect in expected.items():
        if expect.fate == "item":
            assert relpath in in_shards, relpath
            assert relpath not in rejected_by_path
        elif expect.fate == "rejected":
            assert relpath in rejected_by_path, relpath
            assert expect.reason in rejected_by_path[relpath]["reason"], rejected_by_path[relpath]
            assert rejected_by_path[relpath]["stage"] in ("plan", "shard")
        else:
            assert relpath in ignored_by_path, relpath
            assert expect.reason in ignored_by_path[relpath]["reason"], ignored_by_path[relpath]
    # ... and nothing else turned up anywhere.
    assert in_shards | set(rejected_by_path) | set(ignored_by_path) == set(expected)
    assert summary.rejected == len(rejected) and summary.ignored == len(plan["ignored"])
    assert summary.items == sum(len(m["items"]) for m in manifests)


def test_shard_budget_and_long_items_split(sharded):
    _, plan, manifests, _, _ = sharded
    assert all(len(m["items"]) <= 4 for m in manifests)
    segments = [i for m in manifests for i in m["items"] if i["relpath"] == "long/five_seconds.flac"]
    assert [(s["segment"], s["seconds_start"], s["seconds"]) for s in segments] == [
        (0, 0.0, 2.0),
        (1, 2.0, 2.0),
        (2, 4.0, 1.0),
    ]
    assert all(s["seconds_total"] == pytest.approx(5.0) and s["segments"] == 3 for s in segments)


def test_tars_read_back_with_tarfile_deterministic_headers(sharded):
    experiment, plan, manifests, _, _ = sharded
    for shard, manifest in zip(plan["shards"], manifests, strict=True):
        with tarfile.open(experiment.work_dir / "shards" / f"{shard['name']}.tar") as archive:
            members = archive.getmembers()
        names = [member.name for member in members]
        assert names == [f"{item['key']}.{ext}" for item in manifest["items"] for ext in ("flac", "json")]
        for member in members:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
            assert member.mode == 0o644 and member.isfile()
            assert "." not in member.name.split(".", 1)[0]


def test_keys_are_safe_and_unique(sharded):
    _, _, manifests, _, _ = sharded
    keys = [item["key"] for manifest in manifests for item in manifest["items"]]
    assert len(keys) == len(set(keys))
    assert all(set(key) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for key in keys)
    by_path = {item["relpath"]: item["key"] for manifest in manifests for item in manifest["items"]}
    assert by_path["names/a b.wav"] != by_path["names/a_b.wav"]
    assert len(by_path[LONG_NAME]) < 120


def test_webdataset_reads_every_sample_with_metadata(sharded):
    experiment, plan, manifests, _, _ = sharded
    urls = [str(experiment.work_dir / "shards" / f"{s['name']}.tar") for s in plan["shards"]]
    samples = {sample["__key__"]: sample for sample in wds.WebDataset(urls, shardshuffle=False)}
    manifest_items = {item["key"]: item for manifest in manifests for item in manifest["items"]}
    assert set(samples) == set(manifest_items)
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        item = manifest_items[key]
        assert meta["relpath"] == item["relpath"] and meta["seconds_start"] == item["seconds_start"]
        audio, rate = sf.read(io.BytesIO(sample["flac"]), always_2d=True)
        assert rate == 16000 and audio.shape == (item["frames"], 2)
    song = samples[next(k for k, i in manifest_items.items() if i["relpath"] == "captioned/song.wav")]
    song_meta = json.loads(song["json"])
    assert song_meta["caption"] == "a test tone" and song_meta["prompt"] == "a prompt from a text file"
    assert song_meta["seconds"] == pytest.approx(0.5)  # the sidecar's "seconds": 99 cannot override ours
    bad = next(i for i in manifest_items.values() if i["relpath"] == "captioned/bad_meta.wav")
    assert "bad_meta.json" in bad["metadata_error"]


def _decoded_items(experiment, plan, manifests):
    for shard, manifest in zip(plan["shards"], manifests, strict=True):
        with tarfile.open(experiment.work_dir / "shards" / f"{shard['name']}.tar") as archive:
            for item in manifest["items"]:
                payload = archive.extractfile(f"{item['key']}.flac").read()
                yield item, sf.read(io.BytesIO(payload), dtype="float32", always_2d=True)[0]


def test_audio_matches_the_source_after_conversion(sharded, corpus):
    experiment, plan, manifests, _, _ = sharded
    root, _ = corpus
    lsb = 2.0**-15
    for item, stored in _decoded_items(experiment, plan, manifests):
        source, rate = sf.read(root / item["relpath"], dtype="float32", always_2d=True)
        reference = np.clip(resample(convert_channels(source, 2, "downmix"), rate, 16000), -1, 1)
        start = round(item["seconds_start"] * 16000)
        np.testing.assert_allclose(
            stored, reference[start : start + len(stored)], atol=1.5 * lsb, err_msg=item["relpath"]
        )


def test_channel_conversion_independently(sharded, corpus):
    """Checked against formulas written here, not the stage's own functions."""
    experiment, plan, manifests, _, _ = sharded
    root, _ = corpus
    stored = {item["relpath"]: audio for item, audio in _decoded_items(experiment, plan, manifests)}
    mono, _ = sf.read(root / "wav/pcm16_16k_mono.wav", dtype="float32")
    np.testing.assert_allclose(stored["wav/pcm16_16k_mono.wav"], np.stack([mono, mono], axis=1), atol=2.0**-15)
    six, rate = sf.read(root / "surround/six_channels_48k.wav", dtype="float64")
    left = (six[:, 0] + 0.7071 * six[:, 2] + 0.7071 * six[:, 4]) / 2.4142
    right = (six[:, 1] + 0.7071 * six[:, 2] + 0.7071 * six[:, 5]) / 2.4142
    got = stored["surround/six_channels_48k.wav"]
    assert got.shape[0] == 16000
    # After 48k -> 16k resampling, compare the RMS of each side (the tones differ per channel).
    assert np.sqrt(np.mean(got[:, 0] ** 2)) == pytest.approx(np.sqrt(np.mean(left**2)), rel=0.02)
    assert np.sqrt(np.mean(got[:, 1] ** 2)) == pytest.approx(np.sqrt(np.mean(right**2)), rel=0.02)


def test_rejects_multichannel_when_configured(make_experiment):
    path, experiment = make_experiment("reject6", multichannel="reject")
    plan = write_plan(experiment)
    reasons = {entry["relpath"]: entry["reason"] for entry in plan.rejected}
    assert "unsupported channel layout: 6 channels" in reasons["surround/six_channels_48k.wav"]


def _outputs(work_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((work_dir / "shards").iterdir()) if path.is_file()}


def test_byte_identical_across_reruns_and_worker_counts(make_experiment):
    _, one = make_experiment("one")
    _, two = make_experiment("two")
    write_plan(one)
    write_plan(two)
    write_all_shards(one, workers=1, progress=False)
    write_all_shards(two, workers=2, progress=False)
    first = _outputs(one.work_dir)
    assert first == _outputs(two.work_dir)
    assert sum(name.endswith(".tar") for name in first) >= 5
    rerun = write_all_shards(one, workers=1, force=True, progress=False)
    assert rerun.written == len([n for n in first if n.endswith(".tar")])
    assert _outputs(one.work_dir) == first


def test_rerun_skips_complete_shards_and_redoes_changed_ones(make_experiment):
    path, experiment = make_experiment("rerun")
    write_plan(experiment)
    first = write_all_shards(experiment, progress=False)
    assert first.written > 0
    assert write_all_shards(experiment, progress=False).written == 0
    # A damaged tar (size differs from its manifest) is redone, and only that one.
    tar = experiment.work_dir / "shards" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:1000])
    assert write_all_shards(experiment, progress=False).written == 1
    # A different data config changes the stage hash: everything is redone.
    from pipeline.config import load_experiment

    changed = load_experiment(path, ["data.codec={type: flac, bits: 24}"])
    write_plan(changed)
    assert write_all_shards(changed, progress=False).written == first.written


def test_typed_records_read_back_the_files_exactly(sharded):
    """load_plan / load_manifest give records whose JSON is the file's content, byte for byte."""
    from pipeline.layout import layout_of
    from pipeline.shards.plan import load_manifest, load_plan
    from pipeline.utils.atomic import canonical_json

    experiment, plan, manifests, _, _ = sharded
    layout = layout_of(experiment)
    typed = load_plan(experiment)
    assert canonical_json(typed.to_json()) == layout.plan.read_text(encoding="utf-8")
    assert typed.to_json() == plan and typed.indices == [shard["index"] for shard in plan["shards"]]
    for index, manifest in zip(typed.indices, manifests, strict=True):
        record = load_manifest(layout, index)
        assert canonical_json(record.to_json()) == layout.manifest(index).read_text(encoding="utf-8")
        assert record.keys == [item["key"] for item in manifest["items"]]


def test_damaged_plan_and_manifest_are_user_errors(tmp_path):
    from pipeline.errors import UserFacingError
    from pipeline.layout import Layout
    from pipeline.shards.plan import load_manifest, load_plan

    layout = Layout(tmp_path)
    layout.shards_dir.mkdir()
    layout.plan.write_text('{"format": "pipeline-shard-plan"}')
    with pytest.raises(UserFacingError, match="plan.json is not a readable shard plan"):
        load_plan(layout)
    layout.manifest(0).write_text("[1, 2")
    with pytest.raises(UserFacingError, match="shard-000000.json is not a readable shard manifest"):
        load_manifest(layout, 0)
    with pytest.raises(UserFacingError, match="shard 1 is not written"):
        load_manifest(layout, 1)
