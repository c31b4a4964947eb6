# Stage 8: what `snakemake --report report.html` (or report.zip) shows, written by `pipeline report-figures`
# under <work_dir>/report/: the loss curves (Training), the index's statistics (Latents) and a page that
# plays the sampled WAVs (Samples; sample.smk marks the WAVs themselves too). Each part exists when its
# stage does: nothing without an autoencoder, latents only without a train section. The jobs are cheap
# and read only the workflow's own files, so they run where Snakemake runs (localrules).


report: "../report/workflow.rst"


REPORT_FILES = []  # every file of this stage, the input of the `report` target

if TRAINS_AUTOENCODER:

    localrules:
        report_autoencoder_training,

    rule report_autoencoder_training:
        input:
            rules.train_autoencoder.output.weights,
        output:
            report(
                LAYOUT.report_autoencoder_loss,
                caption="../report/autoencoder_loss.rst",
                category="Training",
                subcategory="autoencoder",
            ),
        log:
            LAYOUT.log("report_autoencoder_training"),
        conda:
            SOFTWARE_ENV
        shell:
            '"${{PIPELINE[@]}}" report-figures "${{EXPERIMENT[@]}}" --part autoencoder > {log} 2>&1'

    REPORT_FILES += rules.report_autoencoder_training.output


if AUTOENCODER_WEIGHTS is not None:

    localrules:
        report_latents,

    rule report_latents:
        input:
            rules.index.output,
        output:
            figure=report(
                LAYOUT.report_latents_figure,
                caption="../report/latents.rst",
                category="Latents",
                subcategory="index",
            ),
            table=report(
                LAYOUT.report_latents_table,
                caption="../report/latents_table.rst",
                category="Latents",
                subcategory="index",
            ),
            csv=report(
                LAYOUT.report_latents_csv,
                caption="../report/latents_csv.rst",
                category="Latents",
                subcategory="index",
            ),
        log:
            LAYOUT.log("report_latents"),
        conda:
            SOFTWARE_ENV
        shell:
            '"${{PIPELINE[@]}}" report-figures "${{EXPERIMENT[@]}}" --part latents > {log} 2>&1'

    REPORT_FILES += rules.report_latents.output


if AUTOENCODER_WEIGHTS is not None and EXPERIMENT.train is not None:

    localrules:
        report_training,
        report_samples,

    rule report_training:
        input:
            rules.train_model.output.weights,
        output:
            report(
                LAYOUT.report_training_loss,
                caption="../report/training_loss.rst",
                category="Training",
                subcategory=f"{EXPERIMENT.train.model.type} model",
            ),
        log:
            LAYOUT.log("report_training"),
        conda:
            SOFTWARE_ENV
        shell:
            '"${{PIPELINE[@]}}" report-figures "${{EXPERIMENT[@]}}" --part training > {log} 2>&1'

    rule report_samples:
        input:
            settings=rules.sample_audio.output.settings,
            wavs=rules.sample_audio.output.wavs,
        output:
            report(
                LAYOUT.report_samples,
                caption="../report/samples.rst",
                category="Samples",
                subcategory="listen",
            ),
        log:
            LAYOUT.log("report_samples"),
        conda:
            SOFTWARE_ENV
        shell:
            '"${{PIPELINE[@]}}" report-figures "${{EXPERIMENT[@]}}" --part samples > {log} 2>&1'

    REPORT_FILES += rules.report_training.output
    REPORT_FILES += rules.report_samples.output


rule report:
    input:
        REPORT_FILES,
