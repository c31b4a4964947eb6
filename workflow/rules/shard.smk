# Stages 1-2: plan (a checkpoint: the shard count depends on the data), then the shards, K per job
# (resources.shard.shards_per_job; each job writes its shards' tars and manifests, then its record).


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
        LAYOUT.job_record("shard", "{job}"),
    log:
        LAYOUT.log("shard-job-{job}"),
    wildcard_constraints:
        job=r"\d{6}",
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.shard.cpus
    resources:
        **per_shard_stage_resources("shard"),
    params:
        stage_hash=HASHES["shard"],
        shards=job_shard_range("shard"),
    shell:
        '"${{PIPELINE[@]}}" shard "${{EXPERIMENT[@]}}" --job {wildcards.job} --quiet > {log} 2>&1'


rule shard_summary:
    input:
        job_records("shard"),
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
        job_records("shard"),
        rules.shard_summary.output[0],
