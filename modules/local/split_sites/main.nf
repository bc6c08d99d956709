process SPLIT_SITES {
    // --mode local only: one matrix -> its n_sites largest sites (by --site_column),
    // sites/<rank>__<site>.<csv|tsv>[.gz] with each site's rows copied verbatim
    tag "${data.name}"
    label 'process_single'

    input:
    path data
    val site_column
    val n_sites

    output:
    path "sites/*", emit: sites
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    fedsynth split-sites \\
        --data ${data} \\
        --site-column '${site_column}' \\
        --n-sites ${n_sites} \\
        --outdir sites \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p sites
    for r in \$(seq 0 \$(( ${n_sites} - 1 ))); do touch sites/\${r}__site\${r}.csv; done
    fedsynth-versions "${task.process}" > versions.yml
    """
}
