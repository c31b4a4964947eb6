"""Install the project's Snakemake profiles where a bare `--profile NAME` finds them.

Snakemake resolves `--profile slurm` in the current directory, then in the user's config directory
(`$XDG_CONFIG_HOME/snakemake/`, usually `~/.config/snakemake/`), then the site's (`/etc/xdg/snakemake/`);
from the repository root only the path form `--profile profiles/slurm` works. The installed copy
adds `snakefile:` (this checkout's Snakefile), so `snakemake --profile slurm` also works from any
other directory. Installing is idempotent and never overwrites a profile it did not write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserFacingError
from pipeline.utils.atomic import write_bytes_atomic

REPOSITORY = Path(__file__).resolve().parent.parent
PROFILES = REPOSITORY / "profiles"
SNAKEFILE = REPOSITORY / "Snakefile"
PROFILE_FILE = "config.yaml"


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path  # the installed config.yaml
    changed: bool  # False: an identical copy was already there

    def line(self) -> str:
        verb = "installed" if self.changed else "already installed (identical)"
        return f"profile {self.name!r} {verb}: {self.path}\nuse it from any directory: snakemake --profile {self.name}"


def available_profiles() -> list[str]:
    """Names of the profiles in this checkout (profiles/<name>/config.yaml)."""
    return sorted(path.parent.name for path in PROFILES.glob(f"*/{PROFILE_FILE}"))


def user_profile_dir() -> Path:
    """Where Snakemake looks for profiles of this user: $XDG_CONFIG_HOME/snakemake (default ~/.config/snakemake)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "snakemake"


def installed_text(name: str) -> str:
    """The profile as installed: the checkout's file behind a header that names its origin, plus `snakefile:`."""
    source = PROFILES / name / PROFILE_FILE
    if not source.is_file():
        known = ", ".join(available_profiles()) or "none"
        raise UserFacingError(f"no profile {name!r}: {source} does not exist (profiles here: {known})")
    header = (
        f"# Installed by `pipeline install-profile {name}` from {source}.\n"
        "# Edit the original and install again (--force), not this copy.\n"
        f"snakefile: {SNAKEFILE}\n"
    )
    return header + source.read_text(encoding="utf-8")


def install_profile(name: str, destination: Path | None = None, force: bool = False) -> Installed:
    """Copy profiles/<name> to <destination>/<name>/config.yaml (default: the user's Snakemake config dir).

    An identical copy is left alone; a different file there (another profile of the same name, or an
    older install) is an error unless `force` is set."""
    text = installed_text(name)
    target = (destination or user_profile_dir()) / name / PROFILE_FILE
    if target.is_file():
        current = target.read_text(encoding="utf-8", errors="replace")
        if current == text:
            return Installed(name, target, changed=False)
        if not force:
            raise UserFacingError(
                f"{target} exists and differs from this checkout's profiles/{name}: not overwriting it. "
                f"Compare them (diff {target} {PROFILES / name / PROFILE_FILE}), then rerun with --force to "
                "replace it, or install somewhere else with --dest DIR"
            )
    elif target.exists():
        raise UserFacingError(f"{target} exists and is not a file: not touching it")
    # Other files a user put next to it (e.g. a cluster-specific config.v8+.yaml) stay as they are.
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, text.encode("utf-8"))
    return Installed(name, target, changed=True)
