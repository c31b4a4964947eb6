# Stages 4-5: one pre-encode job per shard (the unit of parallelism: N shards = N GPU jobs), then the
# index over all stores. Each job reads its shard tar and the frozen autoencoder's weights.


rule pre_encode_one:
    input:
        tar=rules.shard_one.output.tar,
        manifest=rules.shard_one.output.manifest,
        weights=AUTOENCODER_WEIGHTS,
    output:
        LAYOUT.store("{index}"),
    log:
        LAYOUT.log("pre_encode-{index}"),
    wildcard_constraints:
        index=r"\d{6}",
    group:
        "pre_encode"
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.pre_encode.cpus
    resources:
        **stage_resources("pre_encode"),
        serial=1,  # a group job runs its shard jobs one after another (profiles/slurm)
    params:
        stage_hash=HASHES["pre_encode"],
    shell:
        '"${{PIPELINE[@]}}" pre-encode "${{EXPERIMENT[@]}}" --shard {wildcards.index} --quiet > {log} 2>&1'


rule index:
    input:
        planned_stores,
    output:
        LAYOUT.index,
    log:
        LAYOUT.log("index"),
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.index.cpus
    resources:
        **stage_resources("index"),
    params:
        stage_hash=HASHES["pre_encode"],
    shell:
        '"${{PIPELINE[@]}}" index "${{EXPERIMENT[@]}}" > {log} 2>&1'


rule pre_encode:
    input:
        rules.index.output,
