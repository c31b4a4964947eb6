"""`snakemake --lint` reports nothing for the workflow, run as users run it (repo root, the demo experiment).

Snakemake exits 1 when it prints any lint and 0 ("Congratulations, ...") when there is none. Its
`--lint json` is not passed through by the CLI of the Snakemake we pin (it prints text either way), so the
failure message is made from the text: one line per lint, naming the rule or Snakefile it is about."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT

HEADER = re.compile(r"^Lints for (?P<what>.+):$")
BULLET = re.compile(r"^\s+\* (?P<lint>.+?):?$")


def lints(output: str) -> list[str]:
    """`<what>: <lint title>` for every lint in `snakemake --lint` text output."""
    found, what = [], None
    for line in output.splitlines():
        if header := HEADER.match(line):
            what = header["what"].replace(str(REPO_ROOT) + "/", "")
        elif what is not None and (bullet := BULLET.match(line)):
            found.append(f"{what}: {bullet['lint']}")
    return found


def test_lints_are_read_from_snakemakes_text_output():
    output = (
        f"Lints for snakefile {REPO_ROOT}/workflow/rules/common.smk:\n"
        "    * Path composition with '+' in line 11:\n"
        "      This becomes quickly unreadable.\n"
        "      Also see:\n"
        f"Lints for rule plan (line 4, {REPO_ROOT}/workflow/rules/shard.smk):\n"
        "    * Specify a conda environment or container for each rule.:\n"
        "      https://snakemake.readthedocs.io/en/latest/snakefiles/deployment.html\n"
    )
    assert lints(output) == [
        "snakefile workflow/rules/common.smk: Path composition with '+' in line 11",
        "rule plan (line 4, workflow/rules/shard.smk): Specify a conda environment or container for each rule.",
    ]
    assert lints("Congratulations, your workflow is in a good condition!\n") == []


def test_snakemake_lint_reports_nothing():
    experiment = DEMO_EXPERIMENT.relative_to(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--config", f"experiment={experiment}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    output = result.stdout + result.stderr
    found = lints(output)
    assert not found, f"snakemake --lint reports {len(found)} lint(s):\n" + "\n".join(found)
    assert result.returncode == 0, f"snakemake --lint failed (exit {result.returncode}):\n{output[-3000:]}"
