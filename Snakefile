# Audio -> shards -> latents -> models. Run from the repository root:
#   snakemake --profile profiles/local [--config experiment=configs/experiments/my_run.yaml] [TARGET]
# Targets without wildcards, one per stage: shard (more arrive with their stages); `all` is the default.
# This file only includes; the experiment is loaded and validated once in workflow/rules/common.smk.

include: "workflow/rules/common.smk"
include: "workflow/rules/shard.smk"
include: "workflow/rules/all.smk"
