# The default target: every stage's output (grows as stages land).


rule all:
    default_target: True
    input:
        rules.shard.input,
