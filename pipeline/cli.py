"""The `pipeline` command: one subcommand per stage or tool, each a thin call into a plain function.

Config mistakes print every problem and exit with status 2; other user mistakes (`UserFacingError`:
a missing plan, a shard not in it, ...) print one line and exit with status 1. Nothing else is
caught: an exception from a bug keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pipeline.config import Experiment
    from pipeline.shards.writer import ShardResult
    from pipeline.train.loop import LoopResult

EXIT_USER_ERROR = 1
EXIT_CONFIG_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", type=Path, help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override values (typed as YAML)")


def _load(args: argparse.Namespace):
    from pipeline.config import load_experiment

    return load_experiment(args.experiment, args.overrides)


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.config import stage_hashes

    experiment = _load(args)
    print(f"ok: experiment '{experiment.name}' ({args.experiment}) is valid")
    print(f"  audio_dir: {experiment.paths.audio_dir}")
    print(f"  work_dir:  {experiment.work_dir}")
    for stage, digest in stage_hashes(experiment).items():
        print(f"  {stage} hash: {digest}")
    if not experiment.paths.audio_dir.is_dir():
        print(f"warning: audio_dir {experiment.paths.audio_dir} does not exist (yet)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pipeline.config import to_plain

    experiment = _load(args)
    yaml.safe_dump(to_plain(experiment), sys.stdout, sort_keys=False, allow_unicode=True)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeline.config import experiment_schema
    from pipeline.config.reference import experiment_reference

    text = experiment_reference() if args.markdown else json.dumps(experiment_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    import soundfile as sf

    from pipeline.audio.demo import write_demo_data

    files = write_demo_data(args.out_dir, seed=args.seed, total_seconds=args.seconds)
    seconds = sum(sf.info(str(path)).duration for path in files)
    print(f"wrote {len(files)} audio files ({seconds / 60:.1f} minutes) with sidecar metadata to {args.out_dir}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from pipeline.config import to_plain
    from pipeline.layout import layout_of
    from pipeline.shards.plan import write_plan
    from pipeline.utils.atomic import write_json_if_changed

    experiment = _load(args)
    layout = layout_of(experiment)
    write_json_if_changed(layout.experiment_json, to_plain(experiment))
    totals = write_plan(experiment).totals
    print(
        f"plan: {totals.files} files, {totals.items} items, {totals.seconds / 3600:.2f} h -> "
        f"{totals.shards} shards; {totals.rejected} rejected, {totals.ignored} ignored ({layout.plan})"
    )
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from pipeline.shards.plan import load_plan
    from pipeline.shards.run import summarise, write_all_shards, write_shard_job
    from pipeline.shards.writer import write_shard

    experiment = _load(args)
    if args.job is not None:
        record, results = write_shard_job(experiment, args.job, workers=args.workers, progress=not args.quiet)
        for result in results:
            print(_shard_line(result))
        print(f"shard job {args.job}: {len(results)} shards ({record})")
        return 0
    if args.all:
        summary = write_all_shards(experiment, workers=args.workers, force=args.force, progress=not args.quiet)
    else:
        print(_shard_line(write_shard(experiment, load_plan(experiment), args.shard, force=args.force)))
        if not args.summary:
            return 0
        summary = summarise(experiment)
    print(summary.line())
    return 0


def _shard_line(result: ShardResult) -> str:
    state = "up to date" if result.skipped else "written"
    return (
        f"shard {result.index}: {result.items} items, {result.seconds:.1f} s of audio, "
        f"{len(result.rejected)} rejected ({state})"
    )


def cmd_shard_summary(args: argparse.Namespace) -> int:
    from pipeline.shards.run import summarise

    summary = summarise(_load(args))
    print(summary.line())
    return 1 if summary.missing_shards else 0


def cmd_import_sat(args: argparse.Namespace) -> int:
    from pipeline.config.sat import import_sat_config

    sections, notes = import_sat_config(args.model_config, args.checkpoint, args.checkpoint_prefix, args.t5_dir)
    header = [f"# Imported from stable-audio-tools config {args.model_config} by `pipeline import-sat`."]
    header += [f"# Not carried over / to do: {note}" for note in notes]
    text = "\n".join(header) + "\n" + yaml.safe_dump(sections, sort_keys=False, default_flow_style=None)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}; use it with `extends:` in an experiment", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_train_autoencoder(args: argparse.Namespace) -> int:
    def train(experiment: Experiment) -> LoopResult:
        from pipeline.train.autoencoder import train_autoencoder

        return train_autoencoder(experiment, progress=not args.quiet, max_steps=args.max_steps)

    return _launch_or_train(args, "train_autoencoder", "train-autoencoder", train)


def cmd_train(args: argparse.Namespace) -> int:
    if args.submit or _submit_options_given(args):
        return _submit_train(args)

    def train(experiment: Experiment) -> LoopResult:
        from pipeline.train.stage import train_stage

        return train_stage(experiment, progress=not args.quiet, max_steps=args.max_steps)

    return _launch_or_train(args, "train", "train", train)


def _launch_or_train(
    args: argparse.Namespace, stage: str, label: str, train: Callable[[Experiment], LoopResult]
) -> int:
    """With --launch and several processes in `resources.<stage>`: start them (srun / torchrun) and return
    their exit status; otherwise train in this process. The launcher itself never imports torch."""
    experiment = _load(args)
    if args.launch:
        from pipeline.train.launch import launch_command, run_launched

        resources = getattr(experiment.resources, stage)
        arguments = [item for item in args.argv if item != "--launch"]
        command = launch_command(resources, arguments, os.environ, stage)
        if command is not None:
            print(
                f"{stage}: starting {resources.processes} processes: {shlex.join(command)}", file=sys.stderr, flush=True
            )
            return run_launched(command)
    from pipeline.train.loop import EXIT_REQUEUE

    result = train(experiment)
    print(result.line(label))
    return EXIT_REQUEUE if result.stopped_by else 0


SUBMIT_OPTIONS = {  # dest -> flag of the options that only mean something with `train --submit`
    "nodes": "--nodes",
    "gpus_per_node": "--gpus-per-node",
    "partition": "--partition",
    "time": "--time",
    "account": "--account",
    "cpus_per_task": "--cpus-per-task",
    "mem_mb": "--mem-mb",
    "signal_grace": "--signal-grace",
    "max_requeues": "--max-requeues",
    "wait": "--wait",
}


def _submit_options_given(args: argparse.Namespace) -> list[str]:
    return [flag for dest, flag in SUBMIT_OPTIONS.items() if getattr(args, dest) not in (None, False)]


def _submit_train(args: argparse.Namespace) -> int:
    """`pipeline train EXP --submit`: the training as one SLURM job that requeues itself (train/submit.py)."""
    from pipeline.errors import UserFacingError

    if not args.submit:
        given = _submit_options_given(args)
        raise UserFacingError(f"{', '.join(given)} only apply with --submit (they describe the SLURM job it submits)")
    if getattr(args, "launch", False):
        raise UserFacingError("--launch and --submit exclude each other: the submitted job starts its own processes")
    from pipeline.train.submit import SubmitOptions, report, submit, wait_for

    options = SubmitOptions.of(
        _load(args),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        partition=args.partition,
        time=args.time,
        account=args.account,
        cpus_per_task=args.cpus_per_task,
        mem_mb=args.mem_mb,
        signal_grace_s=args.signal_grace,
        max_requeues=args.max_requeues,
    )
    job = submit(args.experiment, args.overrides, options, max_steps=args.max_steps, progress=not args.quiet)
    print(job.describe(), flush=True)
    if not args.wait:
        return 0
    try:
        outcome = wait_for(job, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"\nstopped waiting; job {job.job_id} goes on (squeue -j {job.job_id})", file=sys.stderr)
        return 130
    for line in report(job, outcome):
        print(line, flush=True)
    return 0 if outcome.succeeded else EXIT_USER_ERROR


def cmd_sample(args: argparse.Namespace) -> int:
    from pipeline.sample.generate import sample_stage

    experiment = _load(args)
    written = sample_stage(experiment, _sample_settings(experiment, args), progress=not args.quiet)
    print(f"sample: wrote {len(written.files)} files to {written.directory}")
    return 0


def _sample_settings(experiment, args: argparse.Namespace):
    """The experiment's `sample` section with the command-line flags applied."""
    from pydantic import ValidationError

    from pipeline.errors import UserFacingError

    flags = {
        "count": args.count,
        "seconds": args.seconds,
        "seed": args.seed,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "sampler": args.sampler,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }
    changes = {name: value for name, value in flags.items() if value is not None}
    conditioning = dict(experiment.sample.conditioning)
    for item in args.set or []:
        name, equals, value = item.partition("=")
        if not name or not equals:
            raise UserFacingError(f"--set takes ID=VALUE (a conditioner id and its value), not {item!r}")
        try:
            conditioning[name] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise UserFacingError(f"--set {item}: the value is not YAML ({error.__class__.__name__})") from None
    if args.prompt is not None:
        conditioning[_prompt_conditioner(experiment)] = args.prompt
    try:
        return type(experiment.sample).model_validate(
            {**experiment.sample.model_dump(), **changes, "conditioning": conditioning}
        )
    except ValidationError as error:  # a flag's value out of range: one line naming the setting
        problems = "; ".join(
            f"sample.{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors()
        )
        raise UserFacingError(problems) from None


def _prompt_conditioner(experiment) -> str:
    """The id of the model's one text conditioner, which `--prompt` sets."""
    from pipeline.errors import UserFacingError

    model = experiment.train.model if experiment.train is not None else None
    ids = [c.id for c in getattr(model, "conditioners", ()) if c.type == "t5"]
    if len(ids) != 1:
        found = "no text (t5) conditioner" if not ids else f"several text conditioners ({', '.join(ids)})"
        raise UserFacingError(f"--prompt: train.model has {found}; give values with --set ID=VALUE")
    return ids[0]


def cmd_pre_encode(args: argparse.Namespace) -> int:
    from pipeline.encode.pre_encode import pre_encode_all, pre_encode_job, pre_encode_shard

    experiment = _load(args)
    if args.job is not None:
        record, results = pre_encode_job(experiment, args.job, workers=args.workers, progress=not args.quiet)
        for result in results:
            print(result.line())
        print(f"pre-encode job {args.job}: {len(results)} shards ({record})")
        return 0
    if args.all:
        results = pre_encode_all(experiment, workers=args.workers, force=args.force, progress=not args.quiet)
    else:
        results = [pre_encode_shard(experiment, args.shard, force=args.force, progress=not args.quiet)]
    for result in results:
        print(result.line())
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from pipeline.latents.index import build_index

    path = build_index(_load(args))
    print(f"index: {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.latents.inspect import describe, describe_item, plot, render

    description = describe_item(args.path, args.item) if args.item else describe(args.path)
    if args.json:
        print(json.dumps(description, indent=2, default=str))
    else:
        sys.stdout.write(render(description))
    if args.plot:
        plot(args.path, args.plot, key=args.item)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_report_figures(args: argparse.Namespace) -> int:
    from pipeline.report import write_report_figures

    for path in write_report_figures(_load(args), args.part):
        print(f"report: wrote {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.latents.store import read_attributes
    from pipeline.latents.verify import verify

    problems = verify(args.path, check_source=not args.no_source, expected=_expected_identity(args.experiment))
    if problems:
        print(f"{len(problems)} problem(s) in {args.path}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    attributes = read_attributes(args.path)
    print(f"ok: {args.path} ({attributes['items']} items, {attributes['frames']} frames)")
    return 0


def cmd_install_profile(args: argparse.Namespace) -> int:
    from pipeline.profiles import install_profile

    print(install_profile(args.name, destination=args.dest, force=args.force).line())
    return 0


def _expected_identity(experiment_file: Path | None) -> dict[str, str] | None:
    """What `verify --experiment` demands of a store or index: the experiment's weights and stage hash."""
    if experiment_file is None:
        return None
    from pipeline.autoencoder import current_weights_sha256
    from pipeline.config import load_experiment, stage_hash

    experiment = load_experiment(experiment_file)
    return {
        "autoencoder_weights_sha256": current_weights_sha256(experiment),
        "stage_hash": stage_hash(experiment, "pre_encode"),
    }


JOB_HELP = (
    "job J of the workflow: its shards (resources.{stage}.shards_per_job of them), then the job's record "
    "(what the Snakemake rule runs; up-to-date shards are skipped)"
)
LAUNCH_HELP = (
    "start one process per GPU of the stage's resources (gpus per node x nodes): srun inside a SLURM "
    "allocation, torchrun otherwise; what the workflow runs"
)


def _add_submit_arguments(train: argparse.ArgumentParser) -> None:
    job = train.add_argument_group(
        "submitting (--submit)", "a SLURM job through submitit; defaults from the experiment's resources.train"
    )
    job.add_argument(
        "--submit", action="store_true", help="submit the training as a SLURM job that requeues itself and resumes"
    )
    job.add_argument("--nodes", type=int, metavar="N", help="nodes (default resources.train.nodes)")
    job.add_argument(
        "--gpus-per-node", type=int, metavar="G", help="GPUs per node, one process each (default resources.train.gpus)"
    )
    job.add_argument("--partition", metavar="P", help="SLURM partition (default: the cluster's)")
    job.add_argument(
        "--time",
        metavar="T",
        help="time limit per job, as sbatch: 90, 1:30:00, 2-00:00:00 (default resources.train.runtime)",
    )
    job.add_argument("--account", metavar="A", help="SLURM account")
    job.add_argument("--cpus-per-task", type=int, metavar="C", help="CPUs per process (default resources.train.cpus)")
    job.add_argument("--mem-mb", type=int, metavar="M", help="memory per node in MB (default resources.train.mem_mb)")
    job.add_argument(
        "--signal-grace",
        type=int,
        metavar="S",
        help="SIGUSR1 this many seconds before the time limit: save and requeue (default resources.train.signal_seconds)",
    )
    job.add_argument("--max-requeues", type=int, metavar="N", help="requeue the job at most N times (default 10)")
    job.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 1 unless it completed")


def build_parser() -> argparse.ArgumentParser:
    from pipeline import __version__

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    _add_experiment_arguments(command("validate", cmd_validate, "check an experiment and print its stage hashes"))
    _add_experiment_arguments(
        command("show", cmd_show, "print the resolved experiment (extends and overrides applied)")
    )
    profile = command(
        "install-profile",
        cmd_install_profile,
        "install a Snakemake profile of this checkout where `snakemake --profile NAME` finds it from any directory",
    )
    profile.add_argument("name", nargs="?", default="slurm", help="profiles/<name> to install (default: slurm)")
    profile.add_argument(
        "--dest",
        type=Path,
        help="profile directory to install into (default: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake)",
    )
    profile.add_argument("--force", action="store_true", help="replace a different profile of that name")
    schema = command("schema", cmd_schema, "print the JSON Schema of experiment files")
    schema.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    schema.add_argument(
        "--markdown",
        action="store_true",
        help="print the Markdown reference of every field instead (docs/experiment-reference.md)",
    )
    _add_experiment_arguments(command("plan", cmd_plan, "list audio_dir, read headers, assign items to shards"))
    shard = command("shard", cmd_shard, "write WebDataset shard tars (one, or every pending one)")
    _add_experiment_arguments(shard)
    which = shard.add_mutually_exclusive_group(required=True)
    which.add_argument("--shard", type=int, metavar="N", help="write shard N of the plan")
    which.add_argument("--all", action="store_true", help="write every shard that is not up to date")
    which.add_argument("--job", type=int, metavar="J", help=JOB_HELP.format(stage="shard"))
    shard.add_argument("--workers", type=int, default=1, metavar="K", help="processes for --all/--job (default 1)")
    shard.add_argument("--force", action="store_true", help="rewrite even up-to-date shards (--shard, --all)")
    shard.add_argument("--summary", action="store_true", help="with --shard: also refresh rejected.jsonl")
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_experiment_arguments(
        command("shard-summary", cmd_shard_summary, "gather rejects into rejected.jsonl; exit 1 if shards are missing")
    )
    sat = command(
        "import-sat",
        cmd_import_sat,
        "convert a stable-audio-tools model config into an autoencoder section (+ train section for diffusion)",
    )
    sat.add_argument(
        "model_config", type=Path, help="stable-audio-tools model config JSON (autoencoder, diffusion_cond/uncond, ...)"
    )
    sat.add_argument(
        "--checkpoint",
        help="pretrained weights: autoencoder.checkpoint (and train.init_from for a diffusion config)",
    )
    sat.add_argument(
        "--checkpoint-prefix", help="key prefix to strip, e.g. 'pretransform.model.' (a diffusion config's default)"
    )
    sat.add_argument("--t5-dir", help="local T5 directory (encoder + tokenizer) for a t5 conditioner's model_dir")
    sat.add_argument("-o", "--output", type=Path, help="write YAML here instead of stdout")
    train_ae = command("train-autoencoder", cmd_train_autoencoder, "train the autoencoder on the shards (resumes)")
    _add_experiment_arguments(train_ae)
    train_ae.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after step N this run (checkpointed; rerun resumes)"
    )
    train_ae.add_argument("--quiet", action="store_true", help="no progress bar")
    train_ae.add_argument("--launch", action="store_true", help=LAUNCH_HELP)
    train = command("train", cmd_train, "train the experiment's model on the latent stores (resumes; torchrun/srun)")
    _add_experiment_arguments(train)
    train.add_argument("--max-steps", type=int, metavar="N", help="stop after step N this run (checkpointed)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_submit_arguments(train)
    train.add_argument("--launch", action="store_true", help=LAUNCH_HELP)
    sample = command("sample", cmd_sample, "generate audio with the exported model (WAV + settings JSON)")
    _add_experiment_arguments(sample)
    sample.add_argument("--count", type=int, help="files to generate")
    sample.add_argument("--seconds", type=float, help="duration of each file")
    sample.add_argument("--seed", type=int, help="noise seed (same seed, same audio)")
    sample.add_argument("--steps", type=int, help="sampler steps")
    sample.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (1: none)")
    sample.add_argument("--sampler", help="diffusion: euler | heun (rectified_flow), ddim | dpmpp_2m (v)")
    sample.add_argument("--temperature", type=float, help="LM: softmax temperature of each code (0: most likely)")
    sample.add_argument("--top-k", type=int, help="LM: draw among the k most likely codes (0: all)")
    sample.add_argument("--top-p", type=float, help="LM: draw among the likeliest codes, up to probability p (0: all)")
    sample.add_argument(
        "--set", action="append", metavar="ID=VALUE", help="a conditioner's value, e.g. --set label=piano (repeatable)"
    )
    sample.add_argument("--prompt", help="the text prompt of the model's t5 conditioner (same as --set ID=TEXT)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    pre = command("pre-encode", cmd_pre_encode, "encode shard tars into HDF5 latent stores (skips up-to-date ones)")
    _add_experiment_arguments(pre)
    which = pre.add_mutually_exclusive_group(required=True)
    which.add_argument("--shard", type=int, metavar="N", help="encode shard N")
    which.add_argument("--all", action="store_true", help="encode every planned shard")
    which.add_argument("--job", type=int, metavar="J", help=JOB_HELP.format(stage="pre_encode"))
    pre.add_argument("--workers", type=int, default=1, metavar="K", help="processes for --all/--job (default 1)")
    pre.add_argument("--force", action="store_true", help="rebuild even up-to-date stores (--shard, --all)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_experiment_arguments(command("index", cmd_index, "gather the shard stores into latents/index.h5"))
    inspect = command("inspect", cmd_inspect, "describe a latent store or index.h5 (size, provenance, statistics)")
    inspect.add_argument("path", type=Path, help="shard store (latents/shard-NNNNNN.h5) or latents/index.h5")
    inspect.add_argument("--item", metavar="KEY", help="describe this item instead of the whole file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--plot", type=Path, metavar="OUT.png", help="also draw an item and the channel statistics")
    report = command(
        "report-figures",
        cmd_report_figures,
        "write the figures and tables of `snakemake --report` under work_dir/report/",
    )
    _add_experiment_arguments(report)
    report.add_argument(
        "--part",
        action="append",
        choices=("training", "autoencoder", "latents", "samples"),
        help="only this part (repeatable; default: every part the experiment has)",
    )
    verify = command("verify", cmd_verify, "check a latent store or index.h5; exit 1 listing every problem")
    verify.add_argument("path", type=Path, help="shard store (latents/shard-NNNNNN.h5) or latents/index.h5")
    verify.add_argument("--no-source", action="store_true", help="skip the source shard tar sha256 check")
    verify.add_argument(
        "--experiment",
        type=Path,
        metavar="EXP",
        help="also require the experiment's current autoencoder weights and pre-encode stage hash",
    )
    demo = command("demo-data", cmd_demo_data, "write the deterministic demo audio corpus")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--seconds", type=float, default=180.0, help="total audio duration (default 180)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that goes away (`pipeline validate EXP | head -1`) ends it quietly."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, where it can be handled, not at interpreter exit
        return status
    except BrokenPipeError:
        _discard_output()
        return EXIT_BROKEN_PIPE


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null, so that nothing (not Python's final flush) writes to the pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (tests)
            pass
    os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    from pipeline.config.errors import ConfigError
    from pipeline.errors import UserFacingError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: --launch reruns it as the ranks
    # `key=value` overrides may also come after options (argparse stops the positional list at the first option)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ConfigError as error:
        print(error.report(), file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
