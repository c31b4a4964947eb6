# Stages 1-2: plan (a checkpoint: the shard count depends on the data) and one job per shard.


checkpoint plan:
    output:
        LAYOUT.plan,
    log:
        LAYOUT.log("plan"),
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
    threads: EXPERIMENT.resources.shard.cpus
    resources:
        **stage_resources("shard"),
        serial=1,  # a group job runs its shard jobs one after another (profiles/slurm)
    params:
        stage_hash=HASHES["shard"],
    shell:
        '"${{PIPELINE[@]}}" shard "${{EXPERIMENT[@]}}" --shard {wildcards.index} --quiet > {log} 2>&1'


def planned_indices(wildcards):
    """Index of every shard in the plan (evaluated after the `plan` checkpoint ran).

    The .smk files import only pipeline.config and pipeline.layout, and the typed plan records
    (pipeline.shards.records, read by pipeline.shards.plan.load_plan) sit in the shard stage, which
    pulls in the audio libraries. All a rule needs is `shards[].index` (docs/formats.md), so it is
    read here with the standard library."""
    import json

    plan_file = checkpoints.plan.get().output[0]
    with open(plan_file, encoding="utf-8") as handle:
        return [shard["index"] for shard in json.load(handle)["shards"]]


def planned_shards(wildcards):
    return [LAYOUT.shard_tar(index) for index in planned_indices(wildcards)]


def planned_manifests(wildcards):
    return [LAYOUT.manifest(index) for index in planned_indices(wildcards)]


rule shard_summary:
    input:
        planned_manifests,
    output:
        LAYOUT.rejected,
        LAYOUT.shard_summary,
    log:
        LAYOUT.log("shard_summary"),
    shell:
        '"${{PIPELINE[@]}}" shard-summary "${{EXPERIMENT[@]}}" 2>&1 | tee {log}'


rule shard:
    input:
        planned_shards,
        rules.shard_summary.output[0],
