# Stages 4-5: one pre-encode job per shard (the unit of parallelism: N shards = N GPU jobs), then the
# index over all stores. Each job reads its shard tar and the frozen autoencoder's weights.

LATENTS = WORK / "latents"


rule pre_encode_one:
    input:
        tar=SHARDS / "shard-{index}.tar",
        manifest=SHARDS / "shard-{index}.json",
        weights=AUTOENCODER_WEIGHTS,
    output:
        LATENTS / "shard-{index}.h5",
    wildcard_constraints:
        index=r"\d{6}",
    params:
        stage_hash=HASHES["pre_encode"],
    log:
        LOGS / "pre_encode-{index}.log",
    threads: EXPERIMENT.resources.pre_encode.cpus
    resources:
        **stage_resources("pre_encode"),
    shell:
        "{PIPELINE} pre-encode {EXP_ARGS} --shard {wildcards.index} --quiet > {log} 2>&1"


def planned_stores(wildcards):
    return [LATENTS / path.with_suffix(".h5").name for path in planned_shards(wildcards)]


rule index:
    input:
        planned_stores,
    output:
        LATENTS / "index.h5",
    params:
        stage_hash=HASHES["pre_encode"],
    log:
        LOGS / "index.log",
    threads: EXPERIMENT.resources.index.cpus
    resources:
        **stage_resources("index"),
    shell:
        "{PIPELINE} index {EXP_ARGS} > {log} 2>&1"


rule pre_encode:
    input:
        LATENTS / "index.h5",
