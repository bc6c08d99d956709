process SYNTHESIZE {
    // Draw the synthetic cohort from the released model (no other site needed). For a model
    // trained on counts also synthetic.gene_counts.tsv + synthetic.samplesheet.csv, in
    // nf-core/rnaseq's layout with this site's gene annotation (from its validated matrix).
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(model), path(annotation)  // annotation: this site's validated .h5ad ([] for none)

    output:
    tuple val(meta), path("synthetic.csv")                        , emit: csv
    tuple val(meta), path("synthetic.h5ad")                       , emit: h5ad
    tuple val(meta), path("synthetic.gene_counts.tsv"), optional: true, emit: gene_counts
    tuple val(meta), path("synthetic.samplesheet.csv"), optional: true, emit: samplesheet
    path "versions.yml"                                           , emit: versions

    script:
    def args = task.ext.args ?: ''
    def genes = annotation ? "--annotation ${annotation}" : ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}
    fedsynth synthesize \\
        --model ${model} \\
        ${genes} \\
        --outdir . \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    touch synthetic.csv synthetic.h5ad synthetic.gene_counts.tsv synthetic.samplesheet.csv
    fedsynth-versions "${task.process}" > versions.yml
    """
}
