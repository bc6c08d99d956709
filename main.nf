#!/usr/bin/env nextflow
/*
 * fedsynth: federated, differentially private synthetic RNA-seq.
 *
 * Each hospital runs this pipeline on its own compute (site mode):
 *   nextflow run main.nf --input site.csv --label_column pam50 \
 *     --site_rank 1 --n_sites 3 --rendezvous tcp://HOST:29500 \
 *     --secret_file session.key --outdir results
 * and the FEDERATED_TRAIN tasks of all sites meet in one authenticated
 * CrypTen session. `-profile test` runs all three demo sites on one host.
 * Parameters: nextflow_schema.json (`--help`).
 */

nextflow.enable.dsl = 2

include { FEDSYNTH                           } from './workflows/fedsynth'
include { validateParameters; paramsHelp     } from './workflows/utils/schema'

workflow {
    def schema = "${projectDir}/nextflow_schema.json"
    if (params.help) {
        log.info paramsHelp(schema, 'nextflow run main.nf --input site.csv --label_column pam50 --site_rank 1 --n_sites 3 --rendezvous tcp://HOST:29500 --secret_file session.key --classes LumA,LumB,Basal,Her2,NormalLike --outdir results')
        return
    }
    // before any process starts: one clear message for every bad parameter
    if (params.validate_params) {
        validateParameters(schema)
    }

    FEDSYNTH()

    FEDSYNTH.out.summary.subscribe { meta, txt -> log.info txt.text.trim() }
}

workflow.onComplete {
    if (workflow.success) {
        log.info "fedsynth: done; results in ${params.outdir}"
    }
}

workflow.onError {
    // Put fedsynth's own message (from the failed task's stderr) last, where
    // the user looks: e.g. "fedsynth: error: [site1] ... rank 2 ...".
    def lines = (workflow.errorReport ?: '').readLines().findAll { it.contains('fedsynth: error:') }
    if (lines) {
        log.error "fedsynth pipeline failed: ${lines.unique().collect { it.trim() }.join('\n')}"
    }
}
