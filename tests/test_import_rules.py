"""Imports point one way (read from the source with `ast`, nothing imported):

- `pipeline.models` knows torch and the config basics, never the experiment, the layout or a stage;
- `pipeline.latents` never imports `encode`, `train` or `sample`;
- no module imports another package's private (`_name`) helpers;
- the `.smk` files import only `pipeline.config` and `pipeline.layout` from the package;
- only `pipeline.train.submit` imports submitit, and `import pipeline.cli` (with its parser) loads none
  of it (`pipeline train --submit` imports it when it submits);
- what loading, validating and hashing an experiment imports is torch-free: `pipeline.config`, the
  layout, the component config modules (`*_config`, `config`) and the packages around them import no
  torch and no module that is not torch-free itself (`tests/test_torch_free.py` checks the result).

`test_the_rules_catch_a_violation` shows each rule failing on a module written to break it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
STAGES = (
    "pipeline.shards",
    "pipeline.encode",
    "pipeline.train",
    "pipeline.sample",
    "pipeline.latents",
    "pipeline.autoencoder",
    "pipeline.cli",
)
FORBIDDEN = {
    "pipeline.models": (
        "pipeline.config.experiment",
        "pipeline.config.sections",
        "pipeline.config.hashing",
        "pipeline.layout",
        *STAGES,
    ),
    "pipeline.latents": ("pipeline.encode", "pipeline.train", "pipeline.sample"),
}
SMK_ALLOWED = ("pipeline.config", "pipeline.layout")
SUBMITIT_MODULE = "pipeline.train.submit"  # the one module that imports submitit
TORCH = ("torch", "torchaudio", "vector_quantize_pytorch")
TORCH_FREE = ("pipeline", "pipeline.layout", "pipeline.errors", "pipeline.audio.codecs", "pipeline.audio.io")
MODEL_PACKAGES = {
    ".".join(path.relative_to(REPO_ROOT).parent.parts) for path in (PACKAGE / "models").rglob("__init__.py")
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in `source`, type-checking ones too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package (a package's __init__ is its own)
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def torch_free(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    in_models = within(module, "pipeline.models") and (
        leaf.endswith("_config") or leaf == "config" or module in MODEL_PACKAGES
    )
    return module in TORCH_FREE or within(module, "pipeline.config") or in_models


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    problems = []
    for imported, name, line in imports(source, module, is_package):
        if imported.split(".")[0] == "submitit" and module != SUBMITIT_MODULE:
            problems.append(f"{module}:{line} imports {imported}: only {SUBMITIT_MODULE} imports submitit")
        if torch_free(module) and (
            imported.split(".")[0] in TORCH or (within(imported, "pipeline") and not torch_free(imported))
        ):
            problems.append(f"{module}:{line} is torch-free but imports {imported}")
        for package, forbidden in FORBIDDEN.items():
            if within(module, package):
                problems += [f"{module}:{line} imports {imported}" for bad in forbidden if within(imported, bad)]
        top = ".".join(imported.split(".")[:2])
        if (
            name
            and name.startswith("_")
            and not name.startswith("__")
            and within(imported, "pipeline")
            and not within(module, top)
        ):
            problems.append(f"{module}:{line} imports private {imported}.{name}")
    return problems


def smk_violations(text: str, where: str) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"\s*(?:from\s+(pipeline[\w.]*)\s+import|import\s+(pipeline[\w.]*))", line)
        imported = match and (match.group(1) or match.group(2))
        if imported and not any(within(imported, allowed) for allowed in SMK_ALLOWED):
            problems.append(f"{where}:{number} imports {imported}")
    return problems


def test_package_imports_point_one_way():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert problems == []


def test_snakemake_files_import_only_config_and_layout():
    problems = []
    for path in [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow").rglob("*.smk"))]:
        problems += smk_violations(path.read_text(encoding="utf-8"), path.name)
    assert problems == []


@pytest.mark.parametrize(
    "module, source, expected",
    [
        (
            "pipeline.models.autoencoder.model",
            "from pipeline.config.experiment import Experiment",
            "imports pipeline.config.experiment",
        ),
        ("pipeline.models.blocks", "from pipeline.layout import Layout", "imports pipeline.layout"),
        (
            "pipeline.models.blocks",
            "if TYPE_CHECKING:\n    import pipeline.encode.pre_encode",
            "imports pipeline.encode.pre_encode",
        ),
        (
            "pipeline.latents.index",
            "from pipeline.encode.pre_encode import store_path",
            "imports pipeline.encode.pre_encode",
        ),
        ("pipeline.latents.index", "from ..train import loop", "imports pipeline.train"),
        ("pipeline.encode.pre_encode", "from pipeline.shards.writer import _encode_sample", "imports private"),
        ("pipeline.cli", "import submitit", "only pipeline.train.submit imports submitit"),
        ("pipeline.train.stage", "from submitit.helpers import Checkpointable", "only pipeline.train.submit"),
        ("pipeline.models.autoencoder.oobleck_config", "import torch.nn", "torch-free but imports torch.nn"),
        (
            "pipeline.config.sections",
            "from pipeline.models.autoencoder.oobleck import X",
            "torch-free but imports pipeline.models.autoencoder.oobleck",
        ),
        (
            "pipeline.models.autoencoder",
            "from pipeline.models.autoencoder.model import Autoencoder",
            "torch-free but imports pipeline.models.autoencoder.model",
        ),
    ],
)
def test_the_rules_catch_a_violation(module, source, expected):
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0]


def test_the_smk_rule_catches_a_violation():
    assert smk_violations("from pipeline.models.autoencoder.checkpoints import weights_path\n", "x.smk") == [
        "x.smk:1 imports pipeline.models.autoencoder.checkpoints"
    ]
    assert smk_violations("from pipeline.layout import layout_of\nimport json\n", "x.smk") == []


def test_the_submit_module_may_import_submitit():
    assert violations("import submitit\nfrom submitit.core.utils import JobPaths", SUBMITIT_MODULE) == []


def test_the_cli_starts_without_submitit():
    script = (
        "import sys\nimport pipeline.cli\npipeline.cli.build_parser()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'submitit'))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
