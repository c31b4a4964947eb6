"""Start-up cost of the commands every run pays for, measured side by side in one run: the current
tree against a git ref (by default the last commit whose config validation imported torch).

    .venv/bin/python bench/startup.py [--ref REF] [--repeats 5]

Times, from each tree's root (the ref is checked out with `git worktree` into a temporary folder
and run with PYTHONPATH=<worktree>, cwd=<worktree>, so `python -m pipeline` and the Snakefile
import its package; `data/` and `results/` are linked in, so both see the same files):
  validate      `python -m pipeline validate configs/experiments/demo.yaml`
  snakemake -n  `snakemake -n --profile profiles/local --config experiment=configs/experiments/demo.yaml`
Repeats alternate the trees (A/B, then B/A); prints the medians and the ratio ref / current. First
checks that both trees print the same stage hashes for the demo (same absolute paths given to both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "d0f90c17879ea8e5d55419d81b53485c5a68899d"  # before issue 11's torch-free config
DEMO = "configs/experiments/demo.yaml"
BIN = Path(sys.executable).parent
COMMANDS = {
    "validate": [sys.executable, "-m", "pipeline", "validate", DEMO],
    "snakemake -n": [str(BIN / "snakemake"), "-n", "--profile", "profiles/local", "--config", f"experiment={DEMO}"],
}


def run(command: list[str], tree: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {tree}:\n{result.stdout}{result.stderr}")
    return elapsed, result.stdout


def stage_hashes(tree: Path) -> list[str]:
    paths = [f"paths.audio_dir={ROOT / 'data/demo'}", f"paths.work_dir={ROOT / 'results/demo'}"]
    _, output = run([*COMMANDS["validate"], *paths], tree)
    return [line.strip() for line in output.splitlines() if " hash: " in line]


def make_worktree(ref: str, where: Path) -> Path:
    tree = where / "ref"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True
    )
    for shared in ("data", "results"):
        if (ROOT / shared).exists():
            (tree / shared).symlink_to(ROOT / shared)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default=DEFAULT_REF, help="git ref to compare against (default: %(default).12s)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (ROOT / "data/demo").is_dir():
        subprocess.run([sys.executable, "-m", "pipeline", "demo-data", "data/demo"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as temporary:
        tree = make_worktree(args.ref, Path(temporary))
        try:
            trees = {"ref": tree, "current": ROOT}
            hashes = {name: stage_hashes(path) for name, path in trees.items()}
            print(f"ref {args.ref[:12]} vs current tree; stage hashes equal: {hashes['ref'] == hashes['current']}")
            times: dict[tuple[str, str], list[float]] = {}
            for repeat in range(args.repeats):
                order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
                for label, command in COMMANDS.items():
                    for name in order:
                        times.setdefault((label, name), []).append(run(command, trees[name])[0])
            print(f"{'command':<14}{'ref s':>9}{'current s':>11}{'ref / current':>15}   (medians of {args.repeats})")
            for label in COMMANDS:
                before, after = (statistics.median(times[(label, name)]) for name in ("ref", "current"))
                print(f"{label:<14}{before:>9.2f}{after:>11.2f}{before / after:>14.2f}x")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
