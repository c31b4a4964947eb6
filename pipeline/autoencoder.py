"""The experiment's frozen autoencoder: which weights file it uses, whether those weights belong to
the experiment, their hash, and loading them. Experiment policy on the stage side; the model and its
file format (`pipeline.models.autoencoder`) know nothing of experiments."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.experiment import Experiment
from pipeline.config.hashing import stage_hash
from pipeline.errors import UserFacingError
from pipeline.layout import layout_of
from pipeline.utils.atomic import sha256_file

if TYPE_CHECKING:
    from pipeline.models.autoencoder.model import Autoencoder


class StaleWeights(UserFacingError):
    """Trained weights that another autoencoder configuration made."""


def weights_path(experiment: Experiment) -> Path:
    """The autoencoder's weights: the configured checkpoint, or what train_autoencoder writes."""
    configured = experiment.autoencoder
    if configured is None:
        raise UserFacingError(f"experiment '{experiment.name}' has no autoencoder section")
    return layout_of(experiment).autoencoder_weights_for(configured.pretrained_weights)


def check_weights_belong(experiment: Experiment) -> Path:
    """The experiment's weights file, after checking it exists and, when the experiment trains its own
    autoencoder, that the train_autoencoder stage hash it records is the experiment's."""
    from pipeline.models.autoencoder.checkpoints import read_saved_description

    path = weights_path(experiment)
    configured = experiment.autoencoder
    assert configured is not None  # weights_path checked
    if not path.is_file():
        hint = "" if configured.pretrained_weights else " (run the train_autoencoder stage first)"
        raise UserFacingError(f"autoencoder weights not found: {path}{hint}")
    if configured.pretrained_weights is None:
        recorded = (read_saved_description(path) or {}).get("stage_hash")
        wanted = stage_hash(experiment, "train_autoencoder")
        if recorded != wanted:
            raise StaleWeights(
                f"{path} was made by train_autoencoder with stage hash {recorded or '(none recorded)'}, but this "
                f"experiment's autoencoder hashes to {wanted}: the weights are stale; run `pipeline "
                f"train-autoencoder EXP` (or `snakemake train_autoencoder`) to train the configured autoencoder"
            )
    return path


def current_weights_sha256(experiment: Experiment) -> str:
    """sha256 of the experiment's autoencoder weights, after checking they belong to it (not stale)."""
    weights = check_weights_belong(experiment)
    status = weights.stat()
    return _weights_sha256(weights, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _weights_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, hashed once per (path, size, mtime) rather than once per shard."""
    return sha256_file(path)


def experiment_autoencoder(experiment: Experiment) -> Autoencoder:
    """The frozen autoencoder of an experiment, loaded strictly (never a random init)."""
    from pipeline.models.autoencoder.checkpoints import load_autoencoder

    path = check_weights_belong(experiment)
    configured = experiment.autoencoder
    assert configured is not None  # check_weights_belong checked
    model = load_autoencoder(configured.model, experiment.data.sample_rate, path, configured.checkpoint_prefix)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
