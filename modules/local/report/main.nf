process REPORT {
    // Gather this site's run.json (training, DP record) and metrics.json
    // (its own evaluation) into <site>.summary.json and a one-line summary.
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(run), path(metrics)   // metrics: [] with --skip_evaluation

    output:
    tuple val(meta), path("${prefix}.summary.json"), emit: json
    tuple val(meta), path("${prefix}.summary.txt") , emit: txt
    path "versions.yml"                            , emit: versions

    script:
    prefix = task.ext.prefix ?: "${meta.id}"
    def scores = metrics ? "--metrics ${metrics}" : ''
    """
    fedsynth-report \\
        --site ${meta.id} \\
        --run ${run} \\
        ${scores} \\
        --prefix ${prefix}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo '{"site": "${meta.id}", "stub": true}' > ${prefix}.summary.json
    echo 'fedsynth [${meta.id}]: stub run' > ${prefix}.summary.txt
    fedsynth-versions "${task.process}" > versions.yml
    """
}
