# Stage 3: train the autoencoder, only when the experiment brings no weights of its own (a pretrained
# `checkpoint`, or a codec's own weights file: autoencoder.pretrained_weights). Later stages take
# AUTOENCODER_WEIGHTS as input: those weights or this rule's output.
# Resumable checkpoints live in autoencoder/runs/<run hash>/, outside the declared outputs (Snakemake
# deletes a job's outputs before it runs it again).

PRETRAINED_WEIGHTS = EXPERIMENT.autoencoder.pretrained_weights if EXPERIMENT.autoencoder is not None else None
AUTOENCODER_WEIGHTS = LAYOUT.autoencoder_weights_for(PRETRAINED_WEIGHTS) if EXPERIMENT.autoencoder is not None else None
TRAINS_AUTOENCODER = EXPERIMENT.autoencoder is not None and PRETRAINED_WEIGHTS is None


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
