# Stage 7: generate audio with the exported model and the frozen autoencoder: WAV files plus the
# settings JSON under samples/ (same seed, same files).


rule sample_audio:
    input:
        weights=rules.train_model.output.weights,
        autoencoder=AUTOENCODER_WEIGHTS,
    output:
        settings=LAYOUT.samples_settings,
    log:
        LAYOUT.log("sample"),
    threads: EXPERIMENT.resources.sample.cpus
    resources:
        **stage_resources("sample"),
    params:
        stage_hash=HASHES["sample"],
    shell:
        "{PIPELINE} sample {EXP_ARGS} --quiet > {log} 2>&1"


rule sample:
    input:
        rules.sample_audio.output,
