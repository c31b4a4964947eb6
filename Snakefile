# Audio -> shards -> latents -> models. Run from the repository root:
#   snakemake --profile profiles/local [--config experiment=configs/experiments/my_run.yaml] [TARGET]
# Targets without wildcards, one per stage: shard, train_autoencoder (when no pretrained checkpoint is
# configured), pre_encode (stores + index, when the experiment has an autoencoder), train and sample
# (when it has a train section), report (the files `snakemake --report report.html` shows); `all` is the default.
# The experiment is loaded and validated once in workflow/rules/common.smk; stages live in their own files.


include: "workflow/rules/common.smk"
include: "workflow/rules/shard.smk"
include: "workflow/rules/autoencoder.smk"


if AUTOENCODER_WEIGHTS is not None:  # experiments without an autoencoder stop after sharding

    include: "workflow/rules/pre_encode.smk"


if AUTOENCODER_WEIGHTS is not None and EXPERIMENT.train is not None:

    include: "workflow/rules/train.smk"
    include: "workflow/rules/sample.smk"


include: "workflow/rules/report.smk"  # what each stage above contributes to `snakemake --report`


# The default target stays here: Snakemake ignores both `default_target` and rule order in included
# files (snakemake issues #2056, #2773), so the one rule of this file is the aggregate of every stage.
rule all:
    default_target: True
    input:
        rules.shard.input,
        rules.pre_encode.input if AUTOENCODER_WEIGHTS is not None else [],
        rules.sample.input if AUTOENCODER_WEIGHTS is not None and EXPERIMENT.train is not None else [],
        rules.report.input,
