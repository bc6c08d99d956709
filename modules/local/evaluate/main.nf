process EVALUATE {
    // Score the synthetic cohort against THIS site's own real data: utility
    // (train on synthetic, test on the real holdout), fidelity, privacy
    // attacks, the model's DP record and this site's lifetime budget (from its
    // FEDERATED_TRAIN run.json). The real data never leaves the site.
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(synthetic), path(train), path(holdout), path(model), path(run_record)

    output:
    tuple val(meta), path("metrics.json"), emit: metrics
    tuple val(meta), path("report.html") , emit: html
    path "versions.yml"                  , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}
    # a class of the shared cohort that this site lacks is left out of the
    # scores (fedsynth evaluate says so in metrics.json's warnings)
    fedsynth evaluate \\
        --synthetic ${synthetic} \\
        --train ${train} \\
        --holdout ${holdout} \\
        --model ${model} \\
        --run-record ${run_record} \\
        --label-column label \\
        --outdir . \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    echo '{"stub": true}' > metrics.json
    touch report.html
    fedsynth-versions "${task.process}" > versions.yml
    """
}
