# Stages 4-5: pre-encoding, K shards per job (resources.pre_encode.shards_per_job; auto: one shard per
# job up to max_jobs jobs, so N shards = N GPU jobs), then the index over all stores. Each job reads its
# shards' tars and the frozen autoencoder's weights, writes one store per shard, then its record.


rule pre_encode_one:
    input:
        shard_jobs=shard_jobs_feeding("pre_encode"),
        weights=AUTOENCODER_WEIGHTS,
    output:
        LAYOUT.job_record("pre_encode", "{job}"),
    log:
        LAYOUT.log("pre_encode-job-{job}"),
    wildcard_constraints:
        job=r"\d{6}",
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.pre_encode.cpus
    resources:
        **per_shard_stage_resources("pre_encode"),
    params:
        stage_hash=HASHES["pre_encode"],
        shards=job_shard_range("pre_encode"),
    shell:
        '"${{PIPELINE[@]}}" pre-encode "${{EXPERIMENT[@]}}" --job {wildcards.job} --quiet > {log} 2>&1'


rule index:
    input:
        job_records("pre_encode"),
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
