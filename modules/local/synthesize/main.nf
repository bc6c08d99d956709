process SYNTHESIZE {
    // Draw the synthetic cohort from the released model (no other site needed).
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(model)

    output:
    tuple val(meta), path("synthetic.csv") , emit: csv
    tuple val(meta), path("synthetic.h5ad"), emit: h5ad
    path "versions.yml"                    , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}
    fedsynth synthesize \\
        --model ${model} \\
        --outdir . \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    touch synthetic.csv synthetic.h5ad
    fedsynth-versions "${task.process}" > versions.yml
    """
}
