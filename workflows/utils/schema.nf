/*
 * Offline parameter validation and --help from nextflow_schema.json.
 *
 * The nf-schema plugin cannot be downloaded where fedsynth runs (no plugin
 * registry), so this is a small JSON-schema checker in plain Groovy for the
 * keywords nextflow_schema.json uses: $defs/allOf groups, required, type
 * (string, integer, number, boolean), enum, pattern, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum, format file-path/directory-path with
 * exists, and nf-schema's errorMessage. Then the rules a schema cannot say
 * (mode-dependent requirements, rank < n_sites, port range).
 *
 * Every problem found is reported in ONE error (no stack trace): the run
 * stops before any process starts.
 */

def schemaGroups(String schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath))
    def groups = []
    def defs = schema['$defs'] ?: schema['definitions'] ?: [:]
    for (ref in (schema.allOf ?: [])) {
        def key = ref['$ref'].tokenize('/')[-1]
        if (defs[key]) groups << defs[key]
    }
    if (schema.properties) groups << [title: 'Other options', properties: schema.properties, required: schema.required ?: []]
    return groups
}

def schemaProperties(String schemaPath) {
    def props = [:]
    schemaGroups(schemaPath).each { g -> g.properties.each { name, spec -> props[name] = spec } }
    return props
}

def isBlank(value) {
    return value == null || (value instanceof CharSequence && value.toString().trim().isEmpty())
}

// One parameter against its schema entry; returns a problem or null.
def checkParam(String name, value, Map spec) {
    def opt = "--${name}"
    def types = spec.type instanceof List ? spec.type : [spec.type]
    def custom = spec.errorMessage ? " (${spec.errorMessage})" : ''
    def num = null
    if (value instanceof Boolean && !('boolean' in types)) {
        return "${opt} needs a value"
    }
    if ('integer' in types && !('string' in types)) {
        if (value instanceof Integer || value instanceof Long || value instanceof BigInteger) {
            num = value as BigDecimal
        } else if (value instanceof CharSequence && value.toString().trim() ==~ /-?\d+/) {
            num = value.toString().trim() as BigDecimal
        } else {
            return "${opt} must be an integer (got '${value}')${custom}"
        }
    } else if ('number' in types && !('string' in types)) {
        if (value instanceof Number) {
            num = value as BigDecimal
        } else {
            try { num = new BigDecimal(value.toString().trim()) }
            catch (Exception e) { return "${opt} must be a number (got '${value}')${custom}" }
        }
    } else if ('boolean' in types) {
        if (!(value instanceof Boolean) && !(value.toString().toLowerCase() in ['true', 'false'])) {
            return "${opt} must be true or false (got '${value}')"
        }
        return null
    }
    if (num != null) {
        if (spec.containsKey('minimum') && num < (spec.minimum as BigDecimal))
            return spec.errorMessage ? "${spec.errorMessage} (got ${value})" : "${opt} must be at least ${spec.minimum} (got ${value})"
        if (spec.containsKey('exclusiveMinimum') && num <= (spec.exclusiveMinimum as BigDecimal))
            return spec.errorMessage ? "${spec.errorMessage} (got ${value})" : "${opt} must be greater than ${spec.exclusiveMinimum} (got ${value})"
        if (spec.containsKey('maximum') && num > (spec.maximum as BigDecimal))
            return spec.errorMessage ? "${spec.errorMessage} (got ${value})" : "${opt} must be at most ${spec.maximum} (got ${value})"
        if (spec.containsKey('exclusiveMaximum') && num >= (spec.exclusiveMaximum as BigDecimal))
            return spec.errorMessage ? "${spec.errorMessage} (got ${value})" : "${opt} must be less than ${spec.exclusiveMaximum} (got ${value})"
        return null
    }
    def s = value.toString()
    if (spec.enum && !(s in spec.enum))
        return "${opt} must be one of ${spec.enum.join(', ')} (got '${s}')"
    if (spec.pattern && !(s =~ spec.pattern))
        return spec.errorMessage ? "${spec.errorMessage} (got '${s}')" : "${opt} '${s}' does not match ${spec.pattern}"
    if (spec.exists && spec.format in ['file-path', 'directory-path', 'path'] && !s.contains('://')) {
        def f = new File(s)
        if (!f.exists())
            return spec.errorMessage ? "${spec.errorMessage}: ${s} does not exist" : "${opt} ${s} does not exist"
        if (spec.format == 'file-path' && f.isDirectory())
            return "${opt} ${s} is a directory, not a file"
        if (spec.format == 'directory-path' && !f.isDirectory())
            return "${opt} ${s} is not a directory"
    }
    return null
}

def validateParameters(String schemaPath) {
    def groups = schemaGroups(schemaPath)
    def problems = []
    def bad = [] as Set     // parameters with a problem already
    def known = [] as Set
    def explain = [:]
    for (g in groups) {
        def required = (g.required ?: []) as Set
        g.properties.each { name, spec ->
            known << name
            explain[name] = spec.description
            def value = params[name]
            if (isBlank(value)) {
                if (name in required) problems << "--${name} is required: ${spec.description}"
                return
            }
            def p = checkParam(name, value, spec)
            if (p) { problems << p; bad << name }
        }
    }

    // Rules across parameters (a JSON schema cannot compare two values).
    def intOrNull = { v -> (v instanceof Number || v.toString() ==~ /-?\d+/) ? (v as Long) : null }
    def nSites = isBlank(params.n_sites) || 'n_sites' in bad ? null : intOrNull(params.n_sites)
    def rank = isBlank(params.site_rank) || 'site_rank' in bad ? null : intOrNull(params.site_rank)
    if (params.mode == 'site') {
        def need = [n_sites: 'the number of sites in the federation',
                    site_rank: "this site's rank, 0..n_sites-1",
                    rendezvous: 'tcp://HOST:PORT where rank 0 listens',
                    secret_file: 'the pre-shared session secret (mode 600)']
        need.each { name, what ->
            if (isBlank(params[name])) problems << "--${name} is required in site mode: ${what}"
        }
        if (rank != null && nSites != null && rank >= nSites)
            problems << "--site_rank ${rank} is out of range: with --n_sites ${nSites} the ranks are 0..${nSites - 1}"
    } else if (params.mode == 'local') {
        if (isBlank(params.n_sites)) problems << "--n_sites is required in local mode: how many sites (the largest groups of --site_column) to run"
        if (!isBlank(params.site_rank)) log.warn "fedsynth: --site_rank is ignored in --mode local (every site runs here)"
        if (!isBlank(params.secret_file)) log.warn "fedsynth: --secret_file is ignored in --mode local (a fresh secret is generated)"
    }
    if (!isBlank(params.rendezvous) && !('rendezvous' in bad) && params.rendezvous.toString() =~ /:(\d+)$/) {
        def port = (params.rendezvous.toString() =~ /:(\d+)$/)[0][1] as Integer
        if (port < 1 || port > 65535) problems << "--rendezvous port ${port} is not in 1..65535"
    }
    if (!params.no_dp && isBlank(params.classes))
        problems << "--classes is required with DP: the comma-separated label vocabulary every site gives alike (e.g. LumA,LumB,Basal,Her2,NormalLike), so that no site's own label set is revealed"
    def t = isBlank(params.max_colluders) || 'max_colluders' in bad ? null : intOrNull(params.max_colluders)
    if (t != null && nSites != null && t >= nSites)
        problems << "--max_colluders ${t} must be less than --n_sites ${nSites}: the honest sites' noise must carry the guarantee"

    if (!isBlank(params.matrix) && !isBlank(params.labels_file))
        problems << "--labels_file cannot be used with --matrix: the labels are the samplesheet's (--input) --label_column"
    if (!isBlank(params.matrix) && isBlank(params.labels_file) && !('input' in bad) && !('matrix' in bad)) {
        def sheetSchema = new File(new File(schemaPath).parentFile, 'assets/schema_input.json').path
        problems.addAll(validateSamplesheet(params.input.toString(), params.matrix.toString(), sheetSchema,
            [params.label_column, params.mode == 'local' ? params.site_column : null]))
    }

    // nextflow turns --site-rank into site-rank and siteRank: catch such typos
    def unknown = params.keySet().findAll { k -> !(k in known) && !(k.contains('-')) }.findAll { k ->
        !known.contains(k.replaceAll(/([A-Z])/, '_$1').toLowerCase())
    }
    def dashed = params.keySet().findAll { k -> k.contains('-') }
    dashed.each { k ->
        def snake = k.replace('-', '_')
        if (snake in known && isBlank(params[snake])) problems << "--${k} is not a parameter: did you mean --${snake}?"
        else if (!(snake in known)) unknown << k
    }
    if (unknown) log.warn "fedsynth: unrecognised parameter(s) ignored: ${unknown.collect { '--' + it }.join(', ')}"

    if (problems) {
        def msg = "fedsynth: invalid parameters (see nextflow_schema.json or --help):\n" +
            problems.collect { "  * ${it}" }.join('\n')
        error(msg)
    }
}

/*
 * --input as a samplesheet (with --matrix): its rows against assets/schema_input.json
 * (required columns, patterns), the label and site columns present and constant over a
 * sample's rows, and its samples against the matrix header (CSV/TSV, optionally .gz;
 * an .h5ad matrix is matched by PREPROCESS). Returns the problems found.
 */
// CSV or TSV by name, optionally gzipped: `lines` lines of f (all when null), each split into trimmed,
// unquoted fields (a leading byte-order mark dropped)
def readFields(File f, Integer lines = null) {
    def stream = new FileInputStream(f)
    if (f.name.endsWith('.gz')) stream = new java.util.zip.GZIPInputStream(stream)
    def sep = f.name.replaceFirst(/\.gz$/, '').endsWith('.csv') ? ',' : '\t'
    def text = stream.withReader('UTF-8') { r ->
        if (lines == null) return r.readLines()
        def out = []
        for (int i = 0; i < lines; i++) { def l = r.readLine(); if (l == null) break; out << l }
        return out
    }.findAll { it.trim() }
    if (text && text[0].startsWith('\uFEFF')) text[0] = text[0].substring(1)
    return text.collect { line -> line.split(java.util.regex.Pattern.quote(sep), -1).collect { it.trim().replaceAll(/^"|"$/, '') } }
}

def readDelimited(File f) {
    def rows = readFields(f)
    return [header: rows ? rows[0] : [], rows: rows.drop(1)]
}

def matrixSamples(File f) {
    // the sample columns of a genes-by-samples matrix (nf-core/rnaseq: gene_id, annotation columns, samples)
    def fields = readFields(f, 1)
    def header = fields ? fields[0] : []
    if (!header || header[0] != 'gene_id') return null   // samples-by-genes, or no gene_id: left to PREPROCESS
    def annotation = ['gene_name', 'gene_symbol', 'gene_biotype', 'transcript_id', 'transcript_id(s)', 'transcript_ids']
    return header.drop(1).findAll { !(it in annotation) }
}

def validateSamplesheet(String sheetPath, String matrixPath, String schemaPath, List columns) {
    def problems = []
    def sheetFile = new File(sheetPath)
    if (!sheetFile.isFile()) return problems   // reported by the parameter check
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath))
    def table = readDelimited(sheetFile)
    def header = table.header
    def name = sheetFile.name
    def required = (schema.items.required ?: []) + columns.findAll { it }
    required.findAll { !(it in header) }.each { c ->
        problems << "--input ${name}: no column '${c}' (columns: ${header.take(8).join(', ')})"
    }
    if (problems) return problems
    def idx = header.findIndexOf { it == 'sample' }
    def values = [:].withDefault { [:] }
    table.rows.eachWithIndex { row, i ->
        if (row.size() != header.size()) {
            problems << "--input ${name}: line ${i + 2} has ${row.size()} fields, the header has ${header.size()}"
            return
        }
        schema.items.properties.each { col, spec ->
            def v = row[header.indexOf(col)]
            if (spec.pattern && !(v ==~ spec.pattern))
                problems << "--input ${name}: line ${i + 2}: ${spec.errorMessage ?: col + ' does not match ' + spec.pattern} (got '${v}')"
        }
        columns.findAll { it }.each { c -> values[c].get(row[idx], [] as Set) << row[header.indexOf(c)] }
    }
    values.each { c, bySample ->
        def clash = bySample.findAll { s, vs -> vs.size() > 1 }
        if (clash) {
            def s = clash.keySet().first()
            problems << "--input ${name}: sample ${s} has rows with different '${c}' values (${clash[s].sort().join(', ')}); a sample's rows (one per sequencing run) must agree"
        }
    }
    def matrixFile = new File(matrixPath)
    if (problems || !matrixFile.isFile() || matrixFile.name.endsWith('.h5ad')) return problems
    def inMatrix = matrixSamples(matrixFile)
    if (inMatrix == null) return problems
    def inSheet = table.rows.collect { it[idx] } as LinkedHashSet
    def notInSheet = inMatrix.findAll { !(it in inSheet) }
    def notInMatrix = inSheet.findAll { !(it in inMatrix) }
    def eg = { List l -> l.take(3).join(', ') + (l.size() > 3 ? ', ...' : '') }
    if (notInSheet) problems << "--input ${name}: ${notInSheet.size()} samples of --matrix ${matrixFile.name} are not in the samplesheet (e.g. ${eg(notInSheet)})"
    if (notInMatrix) problems << "--input ${name}: ${notInMatrix.size()} samples are not in --matrix ${matrixFile.name} (e.g. ${eg(notInMatrix as List)})"
    return problems
}

def paramsHelp(String schemaPath, String command) {
    def lines = []
    lines << "Usage:\n  ${command}\n"
    for (g in schemaGroups(schemaPath)) {
        lines << "${g.title ?: 'Options'}${g.description ? ': ' + g.description : ''}"
        def required = (g.required ?: []) as Set
        g.properties.each { name, spec ->
            if (spec.hidden) return
            def dflt = spec.containsKey('default') ? " [default: ${spec.default}]" : ''
            def choices = spec.enum ? " (${spec.enum.join('|')})" : ''
            def req = name in required ? ' [required]' : ''
            lines << String.format('  --%-20s %s', name, "${spec.description}${choices}${dflt}${req}")
        }
        lines << ''
    }
    return lines.join('\n')
}
