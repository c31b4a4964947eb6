# Stages 1-2: plan (a checkpoint: the shard count depends on the data) and one job per shard.


checkpoint plan:
    output:
        SHARDS / "plan.json",
    params:
        stage_hash=HASHES["shard"],
    log:
        LOGS / "plan.log",
    threads: EXPERIMENT.resources.plan.cpus
    resources:
        **stage_resources("plan"),
    shell:
        "{PIPELINE} plan {EXP_ARGS} > {log} 2>&1"


rule shard_one:
    input:
        SHARDS / "plan.json",
    output:
        tar=SHARDS / "shard-{index}.tar",
        manifest=SHARDS / "shard-{index}.json",
    wildcard_constraints:
        index=r"\d{6}",
    params:
        stage_hash=HASHES["shard"],
    log:
        LOGS / "shard-{index}.log",
    threads: EXPERIMENT.resources.shard.cpus
    resources:
        **stage_resources("shard"),
    shell:
        "{PIPELINE} shard {EXP_ARGS} --shard {wildcards.index} --quiet > {log} 2>&1"


def planned_shards(wildcards):
    """Tar paths of every shard in the plan (evaluated after the `plan` checkpoint ran)."""
    import json

    plan_file = checkpoints.plan.get().output[0]
    with open(plan_file, encoding="utf-8") as handle:
        names = [shard["name"] for shard in json.load(handle)["shards"]]
    return [SHARDS / f"{name}.tar" for name in names]


def planned_manifests(wildcards):
    return [path.with_suffix(".json") for path in planned_shards(wildcards)]


rule shard_summary:
    input:
        planned_manifests,
    output:
        SHARDS / "rejected.jsonl",
        SHARDS / "summary.json",
    log:
        LOGS / "shard_summary.log",
    shell:
        "{PIPELINE} shard-summary {EXP_ARGS} 2>&1 | tee {log}"


rule shard:
    input:
        planned_shards,
        SHARDS / "rejected.jsonl",
