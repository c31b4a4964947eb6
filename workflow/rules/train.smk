# Stage 6: train the experiment's model (any train.model.type) on the latent index. Declared outputs
# are the exported weights only; resumable checkpoints live in train/checkpoints/<run hash>/, outside
# them (Snakemake deletes a job's outputs before it reruns it), so a rerun after a kill or a
# preemption (exit 75: saved on SIGUSR1/SIGTERM) continues from the newest checkpoint.


rule train_model:
    input:
        index=rules.index.output,
    output:
        weights=LAYOUT.exported_model,
        config=LAYOUT.exported_description,
    log:
        LAYOUT.log("train"),
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.train.cpus
    resources:
        **stage_resources("train"),
    params:
        stage_hash=HASHES["train"],
    shell:
        '"${{PIPELINE[@]}}" train "${{EXPERIMENT[@]}}" --launch --quiet > {log} 2>&1'


rule train:
    input:
        rules.train_model.output,
