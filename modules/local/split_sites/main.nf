process SPLIT_SITES {
    // --mode local only: one matrix -> its n_sites largest sites (by --site_column),
    // sites/<rank>__<site>.<csv|tsv>[.gz] with each site's rows copied verbatim; with a
    // samplesheet, sites/<rank>__<site>.<matrix name> (its sample columns) and
    // sites/<rank>__<site>.samplesheet.csv (its rows)
    tag "${data.name}"
    label 'process_single'

    input:
    path data
    path samplesheet            // [] for a single matrix with a site column
    val site_column
    val n_sites

    output:
    path "sites/*", emit: sites
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def sheet = samplesheet ? "--samplesheet ${samplesheet}" : ''
    """
    fedsynth split-sites \\
        --data ${data} \\
        ${sheet} \\
        --site-column '${site_column}' \\
        --n-sites ${n_sites} \\
        --outdir sites \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    mkdir -p sites
    for r in \$(seq 0 \$(( ${n_sites} - 1 ))); do
        if [ -n "${samplesheet}" ]; then
            touch sites/\${r}__site\${r}.${data.name} sites/\${r}__site\${r}.samplesheet.csv
        else
            touch sites/\${r}__site\${r}.csv
        fi
    done
    fedsynth-versions "${task.process}" > versions.yml
    """
}
