# Stage 3: train the autoencoder, only when the experiment names no pretrained checkpoint.
# Later stages take AUTOENCODER_WEIGHTS as input: the configured checkpoint or this rule's output.
# Resumable checkpoints live in autoencoder/runs/<run hash>/, outside the declared outputs (Snakemake
# deletes a job's outputs before it runs it again).

from pipeline.models.autoencoder.checkpoints import trained_weights_path, weights_path

AUTOENCODER_WEIGHTS = weights_path(EXPERIMENT) if EXPERIMENT.autoencoder is not None else None
TRAINS_AUTOENCODER = EXPERIMENT.autoencoder is not None and EXPERIMENT.autoencoder.checkpoint is None


if TRAINS_AUTOENCODER:

    rule train_autoencoder:
        input:
            planned_shards,
        output:
            weights=trained_weights_path(EXPERIMENT),
            config=trained_weights_path(EXPERIMENT).with_suffix(".json"),
        params:
            stage_hash=HASHES["train_autoencoder"],
        log:
            LOGS / "train_autoencoder.log",
        threads: EXPERIMENT.resources.train_autoencoder.cpus
        resources:
            **stage_resources("train_autoencoder"),
        shell:
            "{PIPELINE} train-autoencoder {EXP_ARGS} --quiet > {log} 2>&1"
