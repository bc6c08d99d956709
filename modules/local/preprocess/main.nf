process PREPROCESS {
    // Validate this site's matrix and split off its own holdout (stratified);
    // values are kept as given (train normalises counts), label in obs['label'].
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(data), path(samplesheet)   // samplesheet: [] when the label is a column of data
    path labels_file            // [] when the label is a column of data or of the samplesheet

    output:
    tuple val(meta), path("${prefix}.train.h5ad")  , emit: train
    tuple val(meta), path("${prefix}.holdout.h5ad"), emit: holdout
    path "versions.yml"                            , emit: versions

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def labels = labels_file ? "--labels-file ${labels_file}" : ''
    def sheet = samplesheet ? "--samplesheet ${samplesheet}" : ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}
    fedsynth preprocess \\
        --data ${data} \\
        ${labels} \\
        ${sheet} \\
        --out ${prefix}.train.h5ad \\
        --holdout-out ${prefix}.holdout.h5ad \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.train.h5ad ${prefix}.holdout.h5ad
    fedsynth-versions "${task.process}" > versions.yml
    """
}
