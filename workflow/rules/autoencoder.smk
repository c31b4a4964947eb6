# Stage 3: train the autoencoder, only when the experiment names no pretrained checkpoint.
# Later stages take AUTOENCODER_WEIGHTS as input: the configured checkpoint or this rule's output.
# Resumable checkpoints live in autoencoder/runs/<run hash>/, outside the declared outputs (Snakemake
# deletes a job's outputs before it runs it again).

AUTOENCODER_WEIGHTS = (
    LAYOUT.autoencoder_weights_for(EXPERIMENT.autoencoder.checkpoint) if EXPERIMENT.autoencoder is not None else None
)
TRAINS_AUTOENCODER = EXPERIMENT.autoencoder is not None and EXPERIMENT.autoencoder.checkpoint is None


if TRAINS_AUTOENCODER:

    rule train_autoencoder:
        input:
            job_records("shard"),
        output:
            weights=LAYOUT.autoencoder_weights,
            config=LAYOUT.autoencoder_description,
        log:
            LAYOUT.log("train_autoencoder"),
        conda:
            SOFTWARE_ENV
        threads: EXPERIMENT.resources.train_autoencoder.cpus
        resources:
            **stage_resources("train_autoencoder"),
        params:
            stage_hash=HASHES["train_autoencoder"],
        shell:
            '"${{PIPELINE[@]}}" train-autoencoder "${{EXPERIMENT[@]}}" --launch --quiet > {log} 2>&1'
