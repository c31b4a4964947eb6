"""Loading, validating and hashing an experiment, exporting its schema and the Snakemake parse's
imports (`pipeline.config`, `pipeline.layout`) import no torch: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import DEMO_EXPERIMENT, REPO_ROOT

HEAVY = ("torch", "torchaudio", "vector_quantize_pytorch")

# Records where the first heavy import came from, so a failure names the importer.
SCRIPT = textwrap.dedent(
    """
    import json, sys, traceback

    HEAVY, first = {heavy!r}, []

    class Spy:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY and not first:
                first.append("".join(traceback.format_stack(limit=40)))
            return None

    sys.meta_path.insert(0, Spy())
    from pipeline.config import experiment_schema, load_experiment, stage_hash, stage_hashes
    from pipeline.config.registry import registered
    from pipeline.layout import layout_of

    experiment = load_experiment({experiment!r})
    hashes = stage_hashes(experiment)
    stage_hash(experiment, "train_autoencoder", ignoring=("autoencoder.training.steps",))
    experiment_schema()
    layout_of(experiment)
    components = [entry.target.partition(":")[0] for kind in ("encoder", "decoder", "bottleneck")
                  for entry in registered(kind).values()]
    print(json.dumps({{"hashes": sorted(hashes),
                      "loaded": sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY}}
                                     | {{m for m in sys.modules if m in components}}),
                      "first": first[0] if first else None}}))
    """
)


def test_loading_and_validating_the_demo_imports_no_torch():
    script = SCRIPT.format(heavy=HEAVY, experiment=str(DEMO_EXPERIMENT))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "pre_encode" in report["hashes"]
    assert report["loaded"] == [], f"imported {report['loaded']}; the first came from:\n{report['first']}"
