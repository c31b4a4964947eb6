"""Workflow planning, SLURM submission and start-up costs, and the demo's wall time, in one run.

    .venv/bin/python bench/workflow.py                 # everything (the 10,000-shard SLURM dry run stops at --plan-timeout)
    .venv/bin/python bench/workflow.py --quick         # ~15 minutes: 10 and 100 shards, small real runs, no demo
    .venv/bin/python bench/workflow.py --only planning --shards 10,1000,10000

Sections (--only NAME[,NAME]; all by default):
  planning  `snakemake -n` with profiles/slurm (+ the SLURM test flags; a dry run submits nothing) and
            profiles/local on a synthetic experiment of N one-item shards, for each N of --shards, with
            the per-shard stages' default `shards_per_job: auto` (at most 500 jobs per stage) and with one
            shard per job (`shards_per_job: 1`, the layout before jobs held several shards): wall and CPU
            seconds, jobs planned. The experiment extends configs/experiments/demo.yaml with its own
            audio_dir (one silent 1 kHz 8-bit WAV of N seconds) and work_dir, and 1 s items, one per
            shard; its plan.json is written by the project's plan writer (pipeline.shards.plan.write_plan),
            so the `plan` checkpoint is done and the DAG holds every job. --cprofile-seconds S profiles
            the SLURM dry run on --cprofile-shards shards for at most S seconds (cProfile, stats written
            when the time is up) and prints Snakemake's functions by cumulative time.
  count     sbatch calls Snakemake makes for --count-shards shards with shards_per_job auto, 1 and 20,
            read from the dry run: one call per job of a rule that is not local (localrules, and rules
            without a shell command, run where Snakemake runs).
  real      the same count checked against real submissions on the local SLURM cluster: target `shard`
            (plan, shard_one per job, shard_summary: cheap CPU jobs) on --real-shards shards with
            resources.shard.shards_per_job = --real-per-job, (a) with the plan already written (a resumed
            run), (b) from scratch (the plan job runs first), (c) one shard per job. Counts the plugin's
            "submitted with SLURM jobid" lines, reads each job's times with scontrol and, from the job
            records (shards/jobs/job-*.json), which shards each job held and whether it wrote them, and
            compares with what the dry run predicted.
  startup   what every SLURM job pays before its work: `python -m pipeline --help` and `pipeline validate`
            (and whether they import torch), `import torch` (what the model stages add), the jobstep
            Snakemake for one shard job (`--target-jobs shard_one:job=000000 -n`, at 10 and at the largest
            N), `pipeline shard` of one demo-sized shard (the work it is amortised over), and sbatch-to-running
            latency of `sbatch --wrap` (the job writes its start time; submissions wait for an empty queue,
            up to 60 s, and say when they did not get one) plus `srun` inside a job.
  demo      `git clone` of this repository (HEAD, not the working tree) into a temporary folder, then
            `make setup` (a fresh .venv) and `make demo` timed separately, with `uptime` before and after.

The machine is shared: every timing comes with its CPU seconds and the load average next to it.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.slurm: the flags every run on the local test cluster needs

from pipeline.config import load_experiment  # noqa: E402
from pipeline.shards.plan import write_plan  # noqa: E402
from tests.slurm import SLURM_TEST_FLAGS, slurm_unavailable  # noqa: E402

BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
DEMO = ROOT / "configs/experiments/demo.yaml"
SOURCE_RATE = 1000  # Hz: the lowest rate the plan accepts; 8-bit mono, so N shards of 1 s are N kB of WAV
PER_SHARD_STAGES = ("shard", "pre_encode")
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
STAMP = re.compile(r"^\s*\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
SECTIONS = ("planning", "count", "real", "startup", "demo")


# --- synthetic experiments ---------------------------------------------------------------------------
def synthetic(work: Path, shards: int, plan: bool = True) -> Path:
    """An experiment of `shards` one-item shards under `work` (audio, experiment YAML, and its plan)."""
    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    source = audio / "silence.wav"
    if not source.is_file():
        soundfile.write(source, np.zeros(shards * SOURCE_RATE, dtype=np.float32), SOURCE_RATE, subtype="PCM_U8")
    document = {
        "extends": str(DEMO),
        "name": f"bench-workflow-{shards}",
        "paths": {"audio_dir": str(audio), "work_dir": str(work / "work")},
        "data": {"min_item_seconds": 0.5, "max_item_seconds": 1.0, "shard": {"max_items": 1}},
    }
    experiment = work / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(document), encoding="utf-8")
    if plan:
        written = write_plan(load_experiment(experiment))
        assert len(written.shards) == shards, (len(written.shards), shards)
    return experiment


# --- running commands --------------------------------------------------------------------------------
@dataclass
class Timed:
    wall: float
    cpu: float  # user + system seconds of the process (and the children it waited for)
    returncode: int | None  # None: stopped at the timeout
    output: Path
    started: float  # time.time() at the start


def timed(command: list[str], output: Path, timeout: float, cwd: Path = ROOT, env: dict | None = None) -> Timed:
    """Run `command` with stdout+stderr to `output`; on timeout send SIGINT to its process group (Snakemake
    then cancels its SLURM jobs), SIGKILL 60 s later."""
    started = time.time()
    start = time.perf_counter()
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = start + timeout
        interrupted_at = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if interrupted_at is None and now > deadline:
                os.killpg(process.pid, signal.SIGINT)
                interrupted_at = now
            elif interrupted_at is not None and now > interrupted_at + 60:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.1)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    code = None if interrupted_at is not None else process.returncode
    return Timed(wall, usage.ru_utime + usage.ru_stime, code, output, started)


def load() -> str:
    return "load " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


# --- dry runs ----------------------------------------------------------------------------------------
@dataclass
class DryRun:
    timed: Timed
    jobs: int | None = None  # "total" of the first Job stats table
    rule_counts: dict[str, int] = field(default_factory=dict)
    printed: collections.Counter = field(default_factory=collections.Counter)  # jobs printed, per rule
    first_job: float | None = None  # seconds from the start to the first printed job (parse + DAG)

    @property
    def finished(self) -> bool:
        return self.timed.returncode == 0


def parse_dry_run(run: DryRun) -> DryRun:
    stats = False
    for line in run.timed.output.read_text(errors="replace").splitlines():
        if run.jobs is None:
            if line.startswith("Job stats:"):
                stats = True
            elif stats and line.startswith("total"):
                run.jobs = int(line.split()[1])
            elif stats and re.match(r"^\w+\s+\d+$", line):
                name, count = line.split()
                run.rule_counts[name] = int(count)
        stamp = STAMP.match(line)
        if stamp and run.first_job is None:
            run.first_job = time.mktime(time.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")) - run.timed.started
        printed = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if printed:
            run.printed[printed.group(1)] += 1
    return run


def per_job(shards_per_job: int | str) -> tuple[str, ...]:
    """The `--config` word that sets shards_per_job of both per-shard stages."""
    settings = [f"resources.{stage}.shards_per_job={shards_per_job}" for stage in PER_SHARD_STAGES]
    return (f"overrides={json.dumps(settings)}",)


def dry_run(
    profile: str,
    experiment: Path,
    output: Path,
    timeout: float,
    config: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
) -> DryRun:
    command = [SNAKEMAKE, *targets, "--profile", f"profiles/{profile}", "-n"]
    command += ["--config", f"experiment={experiment}", *config]
    if profile == "slurm":
        command += SLURM_TEST_FLAGS
    return parse_dry_run(DryRun(timed(command, output, timeout)))


def local_rules(experiment: Path) -> set[str]:
    """Rules whose jobs Snakemake runs itself, never through the executor: `localrules` and rules without
    a shell command (aggregates such as `all`), as snakemake.workflow.Workflow.is_local decides for rules
    outside groups. Read from the parsed workflow (Snakemake's API; private attributes: a bench, not a test)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(config={"experiment": str(experiment)}),
                snakefile=ROOT / "Snakefile",
                workdir=ROOT,
            )
            workflow = workflow_api._workflow
            return {rule.name for rule in workflow.rules if rule.name in workflow._localrules or rule.norun}
    finally:
        os.chdir(cwd)


def sbatch_calls(run: DryRun, local: set[str]) -> int:
    """Every job the dry run prints whose rule is not local is one sbatch call in a real run."""
    return sum(count for rule, count in run.printed.items() if rule not in local)


def profile_dry_run(experiment: Path, seconds: float, output: Path) -> None:
    """cProfile of the SLURM dry run for at most `seconds`: the stats are written when the time is up."""
    stats = output.with_suffix(".pstats")
    driver = (
        "import cProfile, os, signal, sys\n"
        "from snakemake.cli import main\n"
        "profiler = cProfile.Profile()\n"
        "def stop(*_):\n"
        f"    profiler.disable(); profiler.dump_stats({str(stats)!r}); os._exit(124)\n"
        "signal.signal(signal.SIGALRM, stop)\n"
        f"signal.alarm({int(seconds)})\n"
        "sys.argv = ['snakemake', *sys.argv[1:]]\n"
        "profiler.enable()\n"
        "try:\n    main()\nfinally:\n    stop()\n"
    )
    command = [
        sys.executable,
        "-c",
        driver,
        "--profile",
        "profiles/slurm",
        "-n",
        "--config",
        f"experiment={experiment}",
    ]
    result = timed([*command, *SLURM_TEST_FLAGS], output, seconds + 120)
    print(f"  {result.wall:.0f} s ({load()}); Snakemake's functions by cumulative time (share of the profiled time):")
    import pstats

    table = pstats.Stats(str(stats))
    total = max(table.total_tt, 1e-9)
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in table.stats.items():
        if "site-packages/snakemake/" in filename and name not in {"<module>"}:
            rows.append((cumulative, own, calls, f"{filename.split('site-packages/')[1]}:{line}({name})"))
    for cumulative, own, calls, where in sorted(rows, reverse=True)[:14]:
        print(f"    {cumulative / total:6.1%} cum  {own / total:6.1%} own  {calls:>11,} calls  {where}")


def planning(args, work: Path) -> None:
    print(f"\n## planning: snakemake -n on N one-item shards (timeout {args.plan_timeout:.0f} s per run)")
    print("| shards | profile | shards per job | wall s | CPU s | to first job s | jobs planned | load |")
    print("|---|---|---|---|---|---|---|---|")
    for shards in args.shards:
        experiment = synthetic(work / f"plan-{shards}", shards)
        for setting in ("auto", 1):
            for profile in args.profiles:
                before = load()
                output = work / f"plan-{shards}-{profile}-{setting}.out"
                run = dry_run(profile, experiment, output, args.plan_timeout, per_job(setting))
                wall = f"{run.timed.wall:.1f}" if run.finished else f"> {args.plan_timeout:.0f} (stopped)"
                jobs = run.jobs if run.jobs is not None else "?"
                first = f"{run.first_job:.0f}" if run.first_job is not None else "-"
                held = f"auto ({math.ceil(shards / max(run.rule_counts.get('shard_one', 1), 1))})"
                held = held if setting == "auto" else "1"
                print(
                    f"| {shards:,} | {profile} | {held} | {wall} | {run.timed.cpu:.1f} | {first} | {jobs} | {before} |",
                    flush=True,
                )
                if run.timed.returncode not in (0, None):
                    print(f"  FAILED (exit {run.timed.returncode}): see {run.timed.output}")
    if args.cprofile_seconds:
        experiment = synthetic(work / f"plan-{args.cprofile_shards}", args.cprofile_shards)
        print(
            f"\n  cProfile of the SLURM dry run on {args.cprofile_shards:,} shards, stopped after {args.cprofile_seconds:.0f} s:"
        )
        profile_dry_run(experiment, args.cprofile_seconds, work / "cprofile.out")


def count(args, work: Path) -> None:
    shards = args.count_shards
    experiment = synthetic(work / f"plan-{shards}", shards)
    local = local_rules(experiment)
    print(f"\n## count: sbatch calls for {shards:,} shards, from the SLURM dry run")
    print(f"  local rules (not submitted): {', '.join(sorted(local))}")
    print("| shards_per_job | wall s | jobs planned | shard_one jobs | pre_encode_one jobs | sbatch calls |")
    print("|---|---|---|---|---|---|")
    for setting in ("auto", 1, 20):
        run = dry_run("slurm", experiment, work / f"count-{shards}-{setting}.out", args.plan_timeout, per_job(setting))
        if not run.finished:
            print(f"| {setting} | > {args.plan_timeout:.0f} (stopped) | | | | |")
            continue
        print(
            f"| {setting} | {run.timed.wall:.0f} | {run.jobs} | {run.printed['shard_one']} "
            f"| {run.printed['pre_encode_one']} | {sbatch_calls(run, local)} |",
            flush=True,
        )


# --- real SLURM runs ---------------------------------------------------------------------------------
def scontrol(job: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout))


def seconds_between(fields: dict[str, str], first: str, last: str) -> float:
    try:
        parse = lambda key: time.mktime(time.strptime(fields[key], "%Y-%m-%dT%H:%M:%S"))
        return parse(last) - parse(first)
    except (KeyError, ValueError):
        return math.nan


@dataclass
class RealRun:
    label: str
    timed: Timed
    jobs: list[dict] = field(default_factory=list)  # per sbatch call: id, rule, run and wait seconds


def real_run(label: str, experiment: Path, work: Path, config: tuple[str, ...], timeout: float) -> RealRun:
    logs = work / "slurm_logs"
    command = [SNAKEMAKE, "shard", "--profile", "profiles/slurm", "--config", f"experiment={experiment}", *config]
    command += [*SLURM_TEST_FLAGS, "--slurm-logdir", str(logs), "--slurm-keep-successful-logs"]
    run = RealRun(label, timed(command, work / "snakemake.out", timeout))
    for job_id, log in SUBMITTED.findall(run.timed.output.read_text(errors="replace")):
        fields = scontrol(job_id)
        run.jobs.append(
            {
                "id": job_id,
                "rule": Path(log).relative_to(logs).parts[0].removeprefix("rule_"),
                "run": seconds_between(fields, "StartTime", "EndTime"),
                "wait": seconds_between(fields, "SubmitTime", "StartTime"),
            }
        )
    return run


def shard_writes(work: Path) -> tuple[collections.Counter, int]:
    """(how many times each shard was written, shard jobs) from the shard jobs' records."""
    written: collections.Counter = collections.Counter()
    records = sorted((work / "work/shards/jobs").glob("job-*.json"))
    for record in records:
        for result in json.loads(record.read_text())["results"]:
            written[result["index"]] += not result["skipped"]
    return written, len(records)


def real(args, work: Path) -> None:
    reason = slurm_unavailable()
    if reason:
        print(f"\n## real: skipped ({reason})")
        return
    shards, size = args.real_shards, args.real_per_job
    print(f"\n## real: target `shard` on the local SLURM cluster, {shards} shards, shards_per_job {size}")
    runs = [
        (f"resumed (plan written), {size} per job", True, size),
        (f"from scratch (plan job first), {size} per job", False, size),
        ("resumed (plan written), 1 per job", True, 1),
    ]
    print(
        "| run | wall s | sbatch calls | SLURM jobs: count x rule | shards written (distinct) | median s per SLURM job "
        "| dry run predicted | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for index, (label, planned, setting) in enumerate(runs):
        directory = work / f"real-{index}"
        if directory.exists():
            shutil.rmtree(directory)
        experiment = synthetic(directory, shards, plan=planned)
        predicted = "- (no plan yet: the dry run cannot see the shards)"
        if planned:
            config = per_job(setting)
            dry = dry_run("slurm", experiment, directory / "dry.out", args.predict_timeout, config, ("shard",))
            predicted = f"{sbatch_calls(dry, local_rules(experiment))}" if dry.finished else "did not end"
        before = load()
        run = real_run(label, experiment, directory, per_job(setting), args.real_timeout)
        kinds = collections.Counter(job["rule"] for job in run.jobs)
        jobs = ", ".join(f"{times} x {rule}" for rule, times in sorted(kinds.items()))
        runs_s = "; ".join(f"{rule}: {median([j['run'] for j in run.jobs if j['rule'] == rule]):.0f}" for rule in kinds)
        written, _ = shard_writes(directory)
        status = "" if run.timed.returncode == 0 else f" (exit {run.timed.returncode})"
        print(
            f"| {label} | {run.timed.wall:.0f}{status} | {len(run.jobs)} | {jobs} | {sum(written.values())} "
            f"({len(written)}) | {runs_s} | {predicted} | {before} |",
            flush=True,
        )
        summary = directory / "work/shards/summary.json"
        if not summary.is_file():
            print(f"  target `shard` NOT complete: {summary} missing (exit status {run.timed.returncode})")
        if any(times > 1 for times in written.values()) or len(written) != shards:
            print(f"  shards not written exactly once: {dict(written)}")


# --- start-up ----------------------------------------------------------------------------------------
def imports_torch(stderr: str) -> bool:
    return any(re.search(r"\|\s+torch$", line) for line in stderr.splitlines())


def repeat(command: list[str], repeats: int, output: Path, cwd: Path = ROOT, prepare=None) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        if prepare:
            prepare()
        result = timed(command, output, 600, cwd=cwd)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: see {output}")
        walls.append(result.wall)
        cpus.append(result.cpu)
    return median(walls), median(cpus)


def wait_for_empty_queue(limit: float = 60.0) -> bool:
    deadline = time.time() + limit
    while time.time() < deadline:
        queue = subprocess.run(["squeue", "--noheader", "--states=PENDING,RUNNING"], capture_output=True, text=True)
        if queue.returncode == 0 and not queue.stdout.strip():
            return True
        time.sleep(2)
    return False


def sbatch_latency(repeats: int, work: Path) -> list[tuple[float, bool, float]]:
    """(seconds from calling sbatch to the job's first command, queue was empty, srun step seconds)."""
    found = []
    for number in range(repeats):
        stamp = work / f"latency-{number}"
        empty = wait_for_empty_queue()
        wrap = (
            f"date +%s.%N > {stamp}.start; a=$(date +%s.%N); srun -n1 true; b=$(date +%s.%N); "
            f'echo "$b - $a" | bc > {stamp}.srun'
        )
        submitted = time.time()
        subprocess.run(
            ["sbatch", "--parsable", "--job-name=bench-workflow-latency", "-o", "/dev/null", "--wrap", wrap],
            check=True,
            capture_output=True,
        )
        deadline = time.time() + 300
        while not (stamp.with_suffix(".srun").is_file() and stamp.with_suffix(".srun").read_text().strip()):
            if time.time() > deadline:
                break
            time.sleep(0.05)
        try:
            started = float(stamp.with_suffix(".start").read_text())
            srun = float(stamp.with_suffix(".srun").read_text())
        except (OSError, ValueError):
            started, srun = math.nan, math.nan
        found.append((started - submitted, empty, srun))
    return found


def startup(args, work: Path) -> None:
    repeats = args.startup_repeats
    print(f"\n## startup: what a SLURM job pays before its work (medians of {repeats}; {load()})")
    small = synthetic(work / "plan-10", 10)
    python = sys.executable
    print("| step | wall s | CPU s | imports torch |")
    print("|---|---|---|---|")
    for label, arguments in {
        "`python -m pipeline --help`": ["-m", "pipeline", "--help"],
        "`pipeline validate EXP`": ["-m", "pipeline", "validate", str(small)],
        '`python -c "import torch"` (what the model stages add)': ["-c", "import torch"],
    }.items():
        output = work / "startup.out"
        wall, cpu = repeat([python, *arguments], repeats, output)
        timed([python, "-X", "importtime", *arguments], output, 600)  # once more, listing every import
        torch = "yes" if imports_torch(output.read_text()) else "no"
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {torch} |", flush=True)
    sizes = sorted({10, max(args.shards)})
    for shards in sizes:
        experiment = synthetic(work / f"plan-{shards}", shards)
        command = [
            SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--target-jobs",
            "shard_one:job=000000",
            "--allowed-rules",
            "shard_one",
            "--cores",
            "all",
            "--force",
            "--nolock",
            "--ignore-incomplete",
            "--max-inventory-time",
            "0",
            "--config",
            f"experiment={experiment}",
            "-n",
        ]
        wall, cpu = repeat(command, repeats, work / "jobstep.out")
        print(f"| jobstep Snakemake, one shard job, `-n` ({shards:,} shards planned) | {wall:.2f} | {cpu:.2f} | no |")
    demo_work = work / "demo-shard"
    audio = ROOT / "data/demo"
    if not audio.is_dir():
        audio = work / "demo-audio"
        if not audio.is_dir():
            subprocess.run([python, "-m", "pipeline", "demo-data", str(audio)], check=True, capture_output=True)
    overrides = [f"paths.work_dir={demo_work}", f"paths.audio_dir={audio}"]
    subprocess.run([python, "-m", "pipeline", "plan", str(DEMO), *overrides], check=True, capture_output=True)
    plan = yaml.safe_load((demo_work / "shards/plan.json").read_text())
    first = plan["shards"][0]
    clear = lambda: [path.unlink() for path in (demo_work / "shards").glob("shard-000000.*")]
    command = [python, "-m", "pipeline", "shard", str(DEMO), *overrides, "--shard", "0", "--quiet"]
    wall, cpu = repeat(command, repeats, work / "shard.out", prepare=clear)
    print(
        f"| `pipeline shard` of demo shard 0 ({len(first['items'])} items, {first['seconds']:.0f} s of audio), "
        f"start-up included | {wall:.2f} | {cpu:.2f} | no |"
    )
    if slurm_unavailable() is None:
        found = sbatch_latency(args.latency_repeats, work)
        latencies = [latency for latency, _, _ in found]
        print(
            f"| sbatch -> job running (`sbatch --wrap`), {len(found)} submissions, "
            f"{sum(empty for _, empty, _ in found)} on an empty queue: "
            f"{', '.join(f'{value:.2f}' for value in latencies)} | {median(latencies):.2f} | - | - |"
        )
        print(
            f"| `srun -n1 true` inside a job (each jobstep runs its job through srun) | {median([s for _, _, s in found]):.2f} | - | - |"
        )


# --- the demo from a fresh clone ---------------------------------------------------------------------
def demo(args, work: Path) -> None:
    clone = work / "clone"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"\n## demo: fresh clone of {head.stdout.strip()} in {clone}, {os.cpu_count()} CPUs")
    print("| step | wall s | CPU s | load before | load after |")
    print("|---|---|---|---|---|")
    env = {key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    for step in ("setup", "demo"):
        before = load()
        result = timed(["make", step], work / f"make-{step}.out", args.demo_timeout, cwd=clone, env=env)
        status = "" if result.returncode == 0 else f" (exit {result.returncode}, see {result.output})"
        print(f"| `make {step}` | {result.wall:.0f}{status} | {result.cpu:.0f} | {before} | {load()} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated: %(default)s")
    parser.add_argument("--shards", default="10,1000,10000", help="shard counts for the planning runs")
    parser.add_argument("--profiles", default="slurm,local")
    parser.add_argument("--plan-timeout", type=float, default=300, help="seconds per dry run before it is stopped")
    parser.add_argument("--cprofile-seconds", type=float, default=0, help="profile a SLURM dry run this long (0: no)")
    parser.add_argument("--cprofile-shards", type=int, default=1000, help="on this many shards")
    parser.add_argument("--count-shards", type=int, default=1000)
    parser.add_argument("--real-shards", type=int, default=12)
    parser.add_argument("--real-per-job", type=int, default=5, help="shards_per_job of the real runs")
    parser.add_argument("--real-timeout", type=float, default=900)
    parser.add_argument("--predict-timeout", type=float, default=120, help="seconds for the dry runs of the real runs")
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=5)
    parser.add_argument("--demo-timeout", type=float, default=1800)
    parser.add_argument("--quick", action="store_true", help="10 and 100 shards, 6 real shards, no demo")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if args.quick:
        args.shards, args.count_shards, args.real_shards, args.real_per_job = "10,100", 100, 6, 3
        args.plan_timeout = min(args.plan_timeout, 120)
        sections.discard("demo")
    args.shards = [int(value) for value in args.shards.split(",")]
    args.profiles = args.profiles.split(",")
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    print(f"bench/workflow.py: {', '.join(s for s in SECTIONS if s in sections)}; {os.cpu_count()} CPUs, {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        for name in SECTIONS:
            if name in sections:
                globals()[name](args, work)


if __name__ == "__main__":
    main()
