/*
 * FEDSYNTH: one site's (or, in --mode local, every site's) federated DP
 * synthesis: PREPROCESS -> FEDERATED_TRAIN -> SYNTHESIZE -> EVALUATE -> REPORT.
 */

include { SPLIT_SITES     } from '../modules/local/split_sites'
include { SESSION_SECRET  } from '../modules/local/session_secret'
include { PREPROCESS      } from '../modules/local/preprocess'
include { FEDERATED_TRAIN } from '../modules/local/federated_train'
include { SYNTHESIZE      } from '../modules/local/synthesize'
include { EVALUATE        } from '../modules/local/evaluate'
include { REPORT          } from '../modules/local/report'

/*
 * --mode local: a free port on 127.0.0.1 for the rendezvous. The first port
 * tried is derived from the work directory, so that `-resume` finds the same
 * port (the rendezvous is an input of FEDERATED_TRAIN: a new one would rerun
 * training); the next ones are tried if it is taken.
 */
def localRendezvous(String seed) {
    int base = 20000 + Math.floorMod(seed.hashCode(), 20000)
    for (int p = base; p < base + 500; p++) {
        try {
            def s = new java.net.ServerSocket(p, 1, java.net.InetAddress.getByName('127.0.0.1'))
            s.close()
            return "tcp://127.0.0.1:${p}"
        } catch (java.io.IOException e) {
            // taken: try the next one
        }
    }
    error("fedsynth: no free port on 127.0.0.1 in ${base}..${base + 499} for the local rendezvous; pass --rendezvous tcp://127.0.0.1:PORT")
}

workflow FEDSYNTH {

    main:
    ch_versions = Channel.empty()
    n_sites = params.n_sites as int
    ch_labels = params.labels_file ? file(params.labels_file, checkIfExists: true) : []

    // --matrix given: --input is its samplesheet (nf-core/differentialabundance's form)
    def matrix = params.matrix ? file(params.matrix, checkIfExists: true) : null
    def samplesheet = params.matrix ? file(params.input, checkIfExists: true) : []

    if (params.mode == 'local') {
        // all n_sites sites of one matrix (and its samplesheet), on this host, in this run
        SPLIT_SITES(matrix ?: file(params.input, checkIfExists: true), samplesheet, params.site_column, n_sites)
        ch_versions = ch_versions.mix(SPLIT_SITES.out.versions)
        ch_sites = SPLIT_SITES.out.sites
            .flatten()
            .map { f -> [f.name.split('__', 2)[0] as int, f] }
            .groupTuple()
            .map { rank, files ->
                // <rank>__<site>.samplesheet.csv beside <rank>__<site>.<matrix name>, or <rank>__<site>.csv alone
                def sheet = files.find { it.name ==~ /.*\.samplesheet\.(csv|tsv)(\.gz)?$/ }
                def data = files.find { it != sheet }
                def name = sheet ? sheet.name.split('__', 2)[1].replaceFirst(/\.samplesheet\.(csv|tsv)(\.gz)?$/, '')
                                 : data.name.split('__', 2)[1].replaceFirst(/\.(csv|tsv)(\.gz)?$/, '')
                [[id: name, rank: rank, n_sites: n_sites], data, sheet ?: []]
            }
        SESSION_SECRET()
        ch_secret = SESSION_SECRET.out.secret
        rendezvous = params.rendezvous ?: localRendezvous(workflow.workDir.toString())
        log.info "fedsynth: --mode local: ${n_sites} sites on this host, rendezvous ${rendezvous}"
    } else {
        // this site only; the others run the same pipeline elsewhere
        def rank = params.site_rank as int
        def name = params.site_name ?: "site${rank}"
        ch_sites = Channel.of([[id: name, rank: rank, n_sites: n_sites], matrix ?: file(params.input, checkIfExists: true),
                               samplesheet])
        ch_secret = Channel.value(file(params.secret_file, checkIfExists: true))
        rendezvous = params.rendezvous
    }

    PREPROCESS(ch_sites, ch_labels)
    ch_versions = ch_versions.mix(PREPROCESS.out.versions.first())

    FEDERATED_TRAIN(PREPROCESS.out.train, ch_secret, rendezvous)
    ch_versions = ch_versions.mix(FEDERATED_TRAIN.out.versions.first())

    // the site's validated matrix carries its gene annotation (gene_name, versioned gene_id) for the outputs
    SYNTHESIZE(FEDERATED_TRAIN.out.model.join(PREPROCESS.out.train))
    ch_versions = ch_versions.mix(SYNTHESIZE.out.versions.first())

    if (params.skip_evaluation) {
        ch_report = FEDERATED_TRAIN.out.run.map { meta, run -> [meta, run, []] }
        ch_metrics = Channel.empty()
    } else {
        ch_eval = SYNTHESIZE.out.h5ad
            .join(PREPROCESS.out.train)
            .join(PREPROCESS.out.holdout)
            .join(FEDERATED_TRAIN.out.model)
            .join(FEDERATED_TRAIN.out.run)   // the site's lifetime budget, for the report
        EVALUATE(ch_eval)
        ch_versions = ch_versions.mix(EVALUATE.out.versions.first())
        ch_report = FEDERATED_TRAIN.out.run.join(EVALUATE.out.metrics)
        ch_metrics = EVALUATE.out.metrics
    }

    REPORT(ch_report)
    ch_versions = ch_versions.mix(REPORT.out.versions.first())

    // one software_versions.yml for the run (nf-core habit)
    ch_versions
        .unique()
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)

    emit:
    model       = FEDERATED_TRAIN.out.model
    synthetic   = SYNTHESIZE.out.csv
    gene_counts = SYNTHESIZE.out.gene_counts   // counts input: nf-core/rnaseq layout, with synthetic.samplesheet.csv
    metrics     = ch_metrics
    summary     = REPORT.out.txt
    versions    = ch_versions
}
