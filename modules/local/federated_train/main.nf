process FEDERATED_TRAIN {
    // This site's part of the federated DP training: joins the CrypTen
    // session of all n_sites sites at the rendezvous, authenticated by the
    // pre-shared secret. Every site's task must run at the same time; each
    // fails within --rendezvous_timeout/--step_timeout if another site is
    // missing or fails, with fedsynth's message naming the step and rank.
    tag "${meta.id}"
    label 'process_train'

    input:
    tuple val(meta), path(train)
    path secret
    val rendezvous

    output:
    tuple val(meta), path("model.pt"), emit: model
    tuple val(meta), path("run.json"), emit: run
    path "versions.yml"              , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    export OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus}
    # c10d's own C++ warnings (with native stack traces) when a peer drops
    # out would bury fedsynth's one-line message: errors only
    export TORCH_CPP_LOG_LEVEL=\${TORCH_CPP_LOG_LEVEL:-ERROR}
    fedsynth train \\
        --rank ${meta.rank} \\
        --world-size ${meta.n_sites} \\
        --rendezvous ${rendezvous} \\
        --secret-file ${secret} \\
        --data ${train} \\
        --label-column label \\
        --site-name ${meta.id} \\
        --outdir . \\
        --no-progress \\
        ${args}

    fedsynth-versions "${task.process}" > versions.yml
    """

    stub:
    """
    touch model.pt
    echo '{"command": "train", "site": "${meta.id}", "rank": ${meta.rank}, "stub": true, "sites": []}' > run.json
    fedsynth-versions "${task.process}" > versions.yml
    """
}
