# Stage 7: generate audio with the exported model and the frozen autoencoder: WAV files plus the
# settings JSON under samples/ (same seed, same files). The WAVs are declared (their names follow from
# sample.count) and marked for `snakemake --report`, which offers them as downloads; the player page
# is workflow/rules/report.smk's report_samples.

SAMPLE_WAVS = [LAYOUT.sample_wav(number) for number in range(EXPERIMENT.sample.count)]


rule sample_audio:
    input:
        weights=rules.train_model.output.weights,
        autoencoder=AUTOENCODER_WEIGHTS,
    output:
        settings=LAYOUT.samples_settings,
        wavs=[
            report(
                wav,
                caption="../report/sample_wav.rst",
                category="Samples",
                subcategory="WAV files",
                labels={"file": wav.name, "seconds": EXPERIMENT.sample.seconds, "seed": EXPERIMENT.sample.seed},
            )
            for wav in SAMPLE_WAVS
        ],
    log:
        LAYOUT.log("sample"),
    conda:
        SOFTWARE_ENV
    threads: EXPERIMENT.resources.sample.cpus
    resources:
        **stage_resources("sample"),
    params:
        stage_hash=HASHES["sample"],
    shell:
        '"${{PIPELINE[@]}}" sample "${{EXPERIMENT[@]}}" --quiet > {log} 2>&1'


rule sample:
    input:
        rules.sample_audio.output,
