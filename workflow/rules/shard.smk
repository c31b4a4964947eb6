# Stages 1-2: plan (a checkpoint: the shard count depends on the data) and one job per shard.


checkpoint plan:
    output:
        LAYOUT.plan,
    log:
        LAYOUT.log("plan"),
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.plan.cpus
    resources:
        **stage_resources("plan"),
    params:
        stage_hash=HASHES["shard"],
    shell:
        '"${{PIPELINE[@]}}" plan "${{EXPERIMENT[@]}}" > {log} 2>&1'


rule shard_one:
    input:
        LAYOUT.plan,
    output:
        tar=LAYOUT.shard_tar("{index}"),
        manifest=LAYOUT.manifest("{index}"),
    log:
        LAYOUT.log("shard-{index}"),
    wildcard_constraints:
        index=r"\d{6}",
    group:
        "shard"
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.shard.cpus
    resources:
        **stage_resources("shard"),
        serial=1,  # a group job runs its shard jobs one after another (profiles/slurm)
    params:
        stage_hash=HASHES["shard"],
    shell:
        '"${{PIPELINE[@]}}" shard "${{EXPERIMENT[@]}}" --shard {wildcards.index} --quiet > {log} 2>&1'


rule shard_summary:
    input:
        planned_manifests,
    output:
        LAYOUT.rejected,
        LAYOUT.shard_summary,
    log:
        LAYOUT.log("shard_summary"),
    conda:
        SOFTWARE_ENV
    shell:
        '"${{PIPELINE[@]}}" shard-summary "${{EXPERIMENT[@]}}" 2>&1 | tee {log}'


rule shard:
    input:
        planned_shards,
        rules.shard_summary.output[0],
