"""Odd and hostile inputs of the plan and shard stages (issue 10): every input file ends up in a shard
or in the rejects ledger with a specific reason; nothing crashes or hangs the run."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio.convert import AudioRejected, decode, read_header
from pipeline.audio.files import native_stderr_filtered
from pipeline.config import load_experiment
from pipeline.config.errors import ConfigError
from pipeline.shards.plan import MAX_SEGMENTS_PER_SOURCE, bytes_per_second, segments_of, write_plan
from pipeline.shards.run import write_all_shards
from tests.conftest import REPO_ROOT
from tests.shards.conftest import experiment_file, tone


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate, channels), rate, **kwargs)
    return path


def _plan(experiment) -> dict:
    """Plan, and read the plan back as the documented JSON (whatever `write_plan` returns in memory)."""
    write_plan(experiment)
    return json.loads((experiment.work_dir / "shards" / "plan.json").read_text())


def _run(tmp_path: Path, audio: Path, **data):
    """Plan and shard `audio` in-process; (plan, manifests, ledger entries by relpath, samples by relpath)."""
    experiment = load_experiment(experiment_file(tmp_path, audio, tmp_path / "work", **data))
    plan = _plan(experiment)
    write_all_shards(experiment, progress=False)
    shards = experiment.work_dir / "shards"
    manifests = [json.loads((shards / f"{s['name']}.json").read_text()) for s in plan["shards"]]
    ledger = [json.loads(line) for line in (shards / "rejected.jsonl").read_text().splitlines()]
    samples = {}
    for shard in plan["shards"]:
        with tarfile.open(shards / f"{shard['name']}.tar") as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    sample = json.loads(archive.extractfile(member).read())
                    samples[sample["relpath"]] = sample
    return plan, manifests, {entry["relpath"]: entry for entry in ledger}, samples


def _cli(
    *commands: list[str], timeout: float = 120, prefix: tuple[str, ...] = (), env=None
) -> subprocess.CompletedProcess:
    """Run `pipeline <command>` for each command in one fresh interpreter (imports are slow), stopping at
    the first that fails; its exit status is the result's."""
    script = (
        "import sys\nfrom pipeline.cli import main\n"
        f"for command in {commands!r}:\n"
        "    status = main(command)\n"
        "    sys.stdout.flush()\n"
        "    if status:\n"
        "        sys.exit(status)\n"
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, env=env
    )


# 1. Upper-case sidecars -----------------------------------------------------------------------------


def test_upper_case_sidecars_reach_the_sample(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "X.WAV")
    (audio / "X.JSON").write_text('{"caption": "upper-case json"}')
    _wav(audio / "dir/Y.Wav")
    (audio / "dir/Y.TXT").write_text("upper-case prompt\n")
    plan, _, ledger, samples = _run(tmp_path, audio)
    assert samples["X.WAV"]["caption"] == "upper-case json"
    assert samples["dir/Y.Wav"]["prompt"] == "upper-case prompt"
    assert {f["relpath"]: sorted(f["sidecars"]) for f in plan["files"]} == {"X.WAV": ["json"], "dir/Y.Wav": ["txt"]}
    assert not ledger


def test_of_two_sidecars_differing_in_case_the_lower_case_one_is_used(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "a.wav")
    (audio / "a.json").write_text('{"caption": "lower"}')
    (audio / "a.JSON").write_text('{"caption": "upper"}')
    plan, _, _, samples = _run(tmp_path, audio)
    assert samples["a.wav"]["caption"] == "lower"
    ignored = {entry["relpath"]: entry["reason"] for entry in plan["ignored"]}
    assert ignored["a.JSON"] == "duplicate metadata sidecar: a.json is used"


# 2. Float WAV and the byte budget -------------------------------------------------------------------


def test_float_wav_codec_needs_32_bits(tmp_path):
    audio, work = tmp_path / "audio", tmp_path / "work"
    with pytest.raises(ConfigError) as error:
        load_experiment(experiment_file(tmp_path, audio, work, codec={"type": "wav", "bits": 16, "float": True}))
    assert "data.codec.float" in error.value.report() and "bits: 32" in error.value.report()
    load_experiment(experiment_file(tmp_path, audio, work, codec={"type": "wav", "bits": 32, "float": True}))


@pytest.mark.parametrize(
    "codec",
    [
        {"type": "wav", "bits": 16},
        {"type": "wav", "bits": 24},
        {"type": "wav", "bits": 32},
        {"type": "wav", "bits": 32, "float": True},
        {"type": "flac", "bits": 24},
    ],
)
def test_byte_budget_matches_what_is_written(tmp_path, codec):
    audio = tmp_path / "audio"
    for index in range(6):
        _wav(audio / f"f{index}.wav", seconds=0.7, rate=22050, channels=2)
    experiment = load_experiment(
        experiment_file(tmp_path, audio, tmp_path / "work", codec=codec, shard={"max_items": 100, "max_bytes": 100_000})
    )
    plan = _plan(experiment)
    write_all_shards(experiment, progress=False)
    assert len(plan["shards"]) > 1  # the byte budget decided the split
    rate = bytes_per_second(experiment)
    for shard in plan["shards"]:
        with tarfile.open(experiment.work_dir / "shards" / f"{shard['name']}.tar") as archive:
            members = [m for m in archive.getmembers() if not m.name.endswith(".json")]
            payloads = {m.name: archive.extractfile(m).read() for m in members}
        assert sum(map(len, payloads.values())) <= shard["pcm_bytes"] + 200 * len(payloads)  # headers only on top
        assert shard["pcm_bytes"] <= experiment.data.shard.max_bytes
        for payload in payloads.values():
            stored, stored_rate = sf.read(io.BytesIO(payload), always_2d=True)
            pcm = stored.size * experiment.data.codec.bits // 8
            assert stored_rate == 16000 and pcm == pytest.approx(len(stored) / 16000 * rate, abs=8)
            if codec["type"] == "wav":
                assert 0 < len(payload) - pcm <= 200
                subtype = "FLOAT" if codec.get("float") else f"PCM_{codec['bits']}"
                assert sf.info(io.BytesIO(payload)).subtype == subtype


# 3. Sidecars that would break strict JSON writing ---------------------------------------------------

BAD_SIDECARS = {
    "nan.json": ('{"caption": "x", "v": NaN}', "NaN is not valid JSON"),
    "inf.json": ('{"v": Infinity}', "Infinity is not valid JSON"),
    "neginf.json": ('{"v": [1, -Infinity]}', "-Infinity is not valid JSON"),
    "overflow.json": ('{"v": 1e999}', "out of range"),
    "deep.json": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to parse"),
    "deep_object.json": ('{"a": ' * 5000 + "1" + "}" * 5000, "nested too deeply to parse"),
    "nested_150.json": ('{"a": ' + "[" * 150 + "]" * 150 + "}", "nested more than 100 levels deep"),
    "surrogate.json": ('{"caption": "\\ud800"}', "lone surrogate"),
    "array.json": ("[1, 2]", "expected a JSON object, got array"),
    "latin1.json": (b'{"caption": "caf\xe9"}', "not UTF-8"),
    "latin1_prompt.txt": (b"caf\xe9\n", "not UTF-8"),
    "huge_int.json": ('{"v": ' + "9" * 5000 + "}", "invalid JSON"),
}


def test_bad_sidecars_are_metadata_errors_not_crashes(tmp_path):
    audio = tmp_path / "audio"
    for name, (content, _) in BAD_SIDECARS.items():
        stem = name.rsplit(".", 1)[0]
        _wav(audio / f"{stem}.wav")
        path = audio / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    plan, manifests, ledger, samples = _run(tmp_path, audio)
    items = {item["relpath"]: item for manifest in manifests for item in manifest["items"]}
    for name, (_, reason) in BAD_SIDECARS.items():
        stem = name.rsplit(".", 1)[0]
        assert reason in ledger[name]["reason"], (name, ledger[name])
        assert ledger[name]["reason"].startswith("metadata sidecar not used: ")
        assert f"{stem}.wav" in samples  # the audio is still an item ...
        assert name in items[f"{stem}.wav"]["metadata_error"] and reason in items[f"{stem}.wav"]["metadata_error"]
        assert "caption" not in samples[f"{stem}.wav"]  # ... without the sidecar's fields
    assert not any(entry["relpath"].endswith(".wav") for entry in ledger.values())


def test_sidecar_broken_after_the_plan_is_a_shard_time_metadata_error(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "a.wav")
    (audio / "a.json").write_text('{"caption": "fine"}')
    experiment = load_experiment(experiment_file(tmp_path, audio, tmp_path / "work"))
    write_plan(experiment)
    (audio / "a.json").write_text(json.dumps({"caption": "now", "loudness": float("nan")}))  # as json.dump writes it
    summary = write_all_shards(experiment, progress=False)
    manifest = json.loads((experiment.work_dir / "shards/shard-000000.json").read_text())
    assert "NaN is not valid JSON" in manifest["items"][0]["metadata_error"]
    ledger = [json.loads(line) for line in (experiment.work_dir / "shards/rejected.jsonl").read_text().splitlines()]
    assert [(e["relpath"], e["stage"]) for e in ledger] == [("a.json", "shard")]
    assert summary.items == 1


def test_shard_all_cli_survives_a_nan_sidecar(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "a.wav")
    _wav(audio / "b.wav")
    (audio / "a.json").write_text(json.dumps({"caption": "x", "v": float("inf")}))
    exp = experiment_file(tmp_path, audio, tmp_path / "work")
    result = _cli(["plan", str(exp)], ["shard", str(exp), "--all", "--quiet"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "2 items" in result.stdout and "1 rejected" in result.stdout


# 4. Non-root: unreadable inputs and an unwritable work_dir ---------------------------------------------

NOBODY = 65534
SETPRIV = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all")


@pytest.fixture
def public_tmp():
    """A directory of our own under /tmp that the unprivileged user can traverse (pytest's tmp root is
    0700, and every pytest session resets it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not available")
    base = Path(tempfile.mkdtemp(prefix="pipeline-nonroot-", dir="/tmp"))
    try:
        base.chmod(0o755)
        probe = base / "probe"
        probe.write_text("secret")
        probe.chmod(0)
        if subprocess.run([*SETPRIV, "cat", str(probe)], capture_output=True).returncode == 0:
            pytest.skip("the unprivileged user can still read a mode-000 file")
        imports = subprocess.run(
            [*SETPRIV, sys.executable, "-c", "import pipeline"], capture_output=True, cwd=REPO_ROOT
        )
        if imports.returncode != 0:  # e.g. a checkout under a 0700 `mktemp -d` folder
            pytest.skip(
                f"the unprivileged user cannot import the package from {REPO_ROOT} (a parent is not traversable)"
            )
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _nobody_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def test_plan_as_non_root_ledgers_unreadable_inputs(public_tmp):
    audio = public_tmp / "audio"
    _wav(audio / "ok.wav")
    _wav(audio / "secret.wav").chmod(0)
    _wav(audio / "captioned.wav")
    (audio / "captioned.json").write_text('{"caption": "hidden from nobody"}')
    (audio / "captioned.json").chmod(0)
    _wav(audio / "no_search/inside.wav")
    _wav(audio / "no_search/deeper/file.wav")
    (audio / "no_search").chmod(0o444)  # read but no execute: names listed, files not reachable
    _wav(audio / "no_list/inside.wav")
    (audio / "no_list").chmod(0o311)  # execute but no read: cannot be listed
    work = public_tmp / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    exp = experiment_file(public_tmp, audio, work)
    exp.chmod(0o644)
    result = _cli(["plan", str(exp)], ["shard", str(exp), "--all", "--quiet"], prefix=SETPRIV, env=_nobody_env(work))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    plan = json.loads((work / "shards/plan.json").read_text())
    reasons = {entry["relpath"]: entry["reason"] for entry in plan["rejected"]}
    assert reasons["secret.wav"] == "unreadable: permission denied"
    assert reasons["captioned.json"] == "metadata sidecar not used: unreadable: permission denied"
    assert reasons["no_search/inside.wav"].startswith("unreadable: permission denied")
    assert reasons["no_search/deeper"].startswith("unreadable directory: permission denied")
    assert reasons["no_list"].startswith("unreadable directory: permission denied")
    assert sorted(f["relpath"] for f in plan["files"]) == ["captioned.wav", "ok.wav"]
    captioned = next(f for f in plan["files"] if f["relpath"] == "captioned.wav")
    assert captioned["sidecars"]["json"]["error"] == "unreadable: permission denied"
    manifest = json.loads((work / "shards/shard-000000.json").read_text())
    assert [i["metadata_error"] for i in manifest["items"] if "metadata_error" in i] == [
        "captioned.json: unreadable: permission denied"
    ]


@pytest.mark.parametrize("layout", ["existing", "missing_below_unwritable"])
def test_unwritable_work_dir_is_a_one_line_error(public_tmp, layout):
    audio = public_tmp / "audio"
    _wav(audio / "ok.wav")
    locked = public_tmp / "locked"
    locked.mkdir(mode=0o755)  # root's, so not writable for nobody
    work = locked if layout == "existing" else locked / "results" / "run"
    exp = experiment_file(public_tmp, audio, work)
    exp.chmod(0o644)
    result = _cli(["plan", str(exp)], prefix=SETPRIV, env=_nobody_env(public_tmp))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: cannot ") and "Permission denied" in result.stderr
    assert str(work if layout == "existing" else locked / "results") in result.stderr


def test_unreadable_audio_dir_is_a_one_line_error(public_tmp):
    audio = public_tmp / "audio"
    _wav(audio / "ok.wav")
    audio.chmod(0o311)
    work = public_tmp / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    exp = experiment_file(public_tmp, audio, work)
    exp.chmod(0o644)
    result = _cli(["plan", str(exp)], prefix=SETPRIV, env=_nobody_env(work))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: cannot list paths.audio_dir {audio}: Permission denied"


# 5. FIFOs are never opened ---------------------------------------------------------------------------


def test_fifos_are_ledgered_not_opened(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "ok.wav")
    _wav(audio / "captioned.wav")
    os.mkfifo(audio / "pipe.wav")
    os.mkfifo(audio / "captioned.json")
    os.symlink("pipe.wav", audio / "link_to_pipe.flac")
    exp = experiment_file(tmp_path, audio, tmp_path / "work")
    result = _cli(["plan", str(exp)], ["shard", str(exp), "--all", "--quiet"], timeout=60)  # plan hung forever before
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "work/shards/plan.json").read_text())
    reasons = {entry["relpath"]: entry["reason"] for entry in plan["rejected"]}
    assert reasons["pipe.wav"] == "not a regular file: a FIFO (named pipe); never opened"
    assert reasons["link_to_pipe.flac"] == "not a regular file: a FIFO (named pipe); never opened"
    assert reasons["captioned.json"] == "metadata sidecar not used: " + reasons["pipe.wav"]


def test_decode_refuses_a_fifo_that_replaced_a_planned_file(tmp_path):
    os.mkfifo(tmp_path / "late.wav")
    code = (
        "from pipeline.audio.convert import decode, AudioRejected\n"
        f"try: decode({str(tmp_path / 'late.wav')!r})\n"
        "except AudioRejected as e: print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert "not a regular file: a FIFO" in result.stdout, result.stderr


# 6. Absurd sample rates and segment counts ----------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 100, 999])
def test_absurd_source_sample_rates_are_rejected(tmp_path, rate):
    path = tmp_path / "tiny.wav"
    sf.write(str(path), np.zeros((3000, 1), np.float32), rate)
    with pytest.raises(AudioRejected, match=f"unsupported sample rate: the header declares {rate} Hz"):
        read_header(path)


def test_one_hertz_wav_is_one_ledger_entry_not_thousands_of_items(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(str(audio / "tiny.wav"), np.zeros((3000, 1), np.float32), 1)
    plan = _plan(load_experiment(experiment_file(tmp_path, audio, tmp_path / "work")))  # 1500 items before
    assert plan["totals"]["items"] == 0 and plan["shards"] == []
    assert plan["rejected"][0]["reason"].startswith("unsupported sample rate: the header declares 1 Hz")


def test_a_header_announcing_far_more_audio_than_the_file_holds_is_rejected_at_plan_time(tmp_path):
    """A damaged FLAC length field (found by the fuzz test) turned 3 KB into ~4,500 items and ~1,500 shards."""
    data = bytearray(_encoded("FLAC", "PCM_16", seconds=0.4))
    data[22] = 0x6D  # STREAMINFO total samples: 6,400 -> ~7 million
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "lying.flac").write_bytes(bytes(data))
    _wav(audio / "ok.wav")
    started = time.monotonic()
    plan = _plan(load_experiment(experiment_file(tmp_path, audio, tmp_path / "work")))
    assert time.monotonic() - started < 20 and len(plan["shards"]) == 1 and plan["totals"]["items"] == 1
    assert [(e["relpath"], e["stage"]) for e in plan["rejected"]] == [("lying.flac", "plan")]
    assert plan["rejected"][0]["reason"].startswith("truncated or corrupt: the header announces")
    silence = tmp_path / "silence.flac"  # compresses ~1000:1, and is still fine
    sf.write(str(silence), np.zeros((8000 * 60, 2), np.float32), 8000)
    assert read_header(silence).frames == 8000 * 60


class _Data:
    min_item_seconds = 0.0
    max_item_seconds = 1.0
    long_items = "split"
    segment_overlap_seconds = 0.99  # a hop of 0.01 s


class _Experiment:
    data = _Data()


def test_segment_count_is_bounded():
    segments, reason = segments_of(1600.0, _Experiment())  # 159,901 items before
    assert segments == [] and reason.startswith("too many segments") and str(MAX_SEGMENTS_PER_SOURCE) in reason
    segments, reason = segments_of(900.0, _Experiment())
    assert reason is None and 89_900 <= len(segments) <= 89_902 and sum(segments[-1]) == pytest.approx(900.0)


# 7. Specific reasons, and no decoder chatter ---------------------------------------------------------


def _encoded(fmt: str, subtype: str, seconds: float = 3.0) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, 16000, 1), 16000, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        (
            "half.ogg",
            lambda: _encoded("OGG", "VORBIS")[: len(_encoded("OGG", "VORBIS")) * 7 // 10],
            "truncated or corrupt Ogg stream",
        ),
        ("head.ogg", lambda: _encoded("OGG", "VORBIS")[:200], "corrupt or truncated OGG stream"),
        ("head.mp3", lambda: _encoded("MP3", "MPEG_LAYER_III")[:300], "corrupt or truncated MP3 stream"),
        ("text.mp3", lambda: b"just some text, not audio\n" * 40, "not an audio file: unrecognised format"),
        ("text.flac", lambda: b"just some text, not audio\n" * 40, "not an audio file: unrecognised format"),
        ("empty.wav", lambda: b"", "empty file (0 bytes)"),
    ],
)
def test_specific_reasons(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content())
    with pytest.raises(AudioRejected) as rejection:
        read_header(tmp_path / name)
    assert str(rejection.value).startswith(reason)
    assert "possibly a pipe" not in str(rejection.value) and "zero length" not in str(rejection.value)


def test_symlink_reasons(tmp_path):
    os.symlink("b.wav", tmp_path / "a.wav")
    os.symlink("a.wav", tmp_path / "b.wav")
    os.symlink("self.wav", tmp_path / "self.wav")
    os.symlink("nowhere.wav", tmp_path / "dangling.wav")
    for name in ("a.wav", "self.wav"):
        with pytest.raises(AudioRejected, match="^symlink loop"):
            read_header(tmp_path / name)
    with pytest.raises(AudioRejected, match="^broken symbolic link: its target 'nowhere.wav' does not exist"):
        read_header(tmp_path / "dangling.wav")


def test_mpg123_warnings_do_not_leak_into_plan_and_shard_output(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    mp3 = _encoded("MP3", "MPEG_LAYER_III", seconds=2.0)
    (audio / "whole.mp3").write_bytes(mp3)  # libmpg123 notes "Illegal Audio-MPEG-Header" at its end
    (audio / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])  # "Xing stream size off"
    exp = experiment_file(tmp_path, audio, tmp_path / "work")
    result = _cli(["plan", str(exp)], ["shard", str(exp), "--all", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert "Note:" not in result.stderr and "Warning:" not in result.stderr, result.stderr
    ledger = (tmp_path / "work/shards/rejected.jsonl").read_text()
    assert "cut.mp3" in ledger and "truncated" in ledger  # the real problem is still reported


def test_stderr_filter_keeps_other_native_output(capfd):
    with native_stderr_filtered():
        os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 946.\n")
        os.write(2, b"Warning: Xing stream size off by more than 1%\n")
        os.write(2, b"something else went wrong\n")
    assert capfd.readouterr().err == "something else went wrong\n"


def test_decode_errors_are_still_reasons(tmp_path):
    path = tmp_path / "cut.flac"
    full = _encoded("FLAC", "PCM_16")
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioRejected, match="^(decode error|truncated)"):
        decode(path, read_header(path).frames)


# 8. Hidden files -------------------------------------------------------------------------------------


def test_hidden_audio_files_are_in_the_ledger(tmp_path):
    audio = tmp_path / "audio"
    _wav(audio / "ok.wav")
    _wav(audio / ".hidden.wav")
    _wav(audio / "sub/._ok.wav")  # macOS AppleDouble companion
    (audio / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    _wav(audio / ".cache/inside.wav")
    plan, _, ledger, samples = _run(tmp_path, audio)
    assert set(samples) == {"ok.wav"}
    assert ledger[".hidden.wav"]["reason"].startswith("hidden file") and ledger[".hidden.wav"]["stage"] == "plan"
    assert ledger["sub/._ok.wav"]["reason"].startswith("hidden file")
    ignored = {entry["relpath"]: entry["reason"] for entry in plan["ignored"]}
    assert ignored == {".DS_Store": "hidden file", ".cache": "hidden directory (not listed)"}


# Odd file names ---------------------------------------------------------------------------------------


def test_odd_file_names_are_accounted_for_and_the_ledger_stays_one_entry_per_line(tmp_path):
    audio = tmp_path / "audio"
    names = [
        "new\nline.wav",
        "carriage\rreturn.wav",
        "nel\x85.wav",
        "line\u2028separator.wav",
        'quote"back\\slash.wav',
        "ünï ♪.wav",
        "x" * 251 + ".wav",
    ]
    for name in names:
        _wav(audio / name)
        (audio / name.replace(".wav", ".txt")).write_text(f"caption of {name}")
    for name in names[:4]:
        (audio / name.replace(".wav", ".mp3")).write_bytes(b"not audio")  # rejected, with its name in the ledger
    os.close(os.open(os.fsencode(audio) + b"/latin1-\xe9.wav", os.O_CREAT | os.O_WRONLY))
    plan, manifests, ledger, samples = _run(tmp_path, audio)
    assert set(samples) == set(names)
    for name in names:  # a .txt is read as text: its line ends become \n
        assert samples[name]["prompt"] == f"caption of {name}".replace("\r", "\n")
    assert set(ledger) == {name.replace(".wav", ".mp3") for name in names[:4]} | {"latin1-\ufffd.wav"}
    assert ledger["latin1-\ufffd.wav"]["reason"] == "file name is not valid UTF-8"
