"""`fedsynth evaluate` end to end: files in, metrics.json and one
self-contained report.html out (parsed: every section, embedded images, no
external resources, escaped data), and clear errors for inputs that do not
match."""

import base64
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fedsynth.cli import main as cli
from fedsynth.errors import InputError
from fedsynth.evaluation import SECTIONS, evaluate_files
from fedsynth.generators.modelfile import load_model

GENES = [f"G{j}" for j in range(12)]
CLASSES = ("LumA", "Basal", "<b>Her2&</b>")  # a label that must be escaped


def _frame(n, seed, *, label="pam50", genes=GENES, classes=CLASSES, age=True):
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, n)
    shift = {c: 2.5 * i for i, c in enumerate(classes)}
    X = rng.normal(size=(n, len(genes))) + 6 + np.array([shift[c] for c in y])[:, None] * (np.arange(len(genes)) < 4)
    df = pd.DataFrame(X, columns=genes)
    df.insert(0, label, y)
    if age:
        df.insert(1, "age", rng.integers(30, 80, n))
    df.insert(0, "sample_id", [f"s{seed}_{i}" for i in range(n)])
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    _frame(150, 1).to_csv(d / "train.csv", index=False)
    _frame(60, 2).to_csv(d / "holdout.csv", index=False)
    # the synthetic file has no metadata column and its own label column name
    syn = _frame(150, 3, label="label", age=False)
    syn.to_csv(d / "synthetic.csv", index=False)
    model = d / "model.pt"
    _write_model(model)
    return d, model


def _write_model(path, private=True):
    from fedsynth.generators.cvae import CVAE, CVAEConfig, CVAEGenerator
    from fedsynth.generators.modelfile import save_model

    dp = {"private": private, "epsilon": 1.0 if private else None, "epsilon_spent": 0.99, "delta": 1e-5,
          "epsilon_vs_site": 0.99 if private else None, "max_colluders": 1, "k": 3, "sigma": 1.2, "sites": [{"name": "BH", "n": 87}, {"name": "A8", "n": 64}],
          "stat_sigma": None, "noise_multipliers": {"counts": 5.0, "means": 7.25} if private else None}
    generator = CVAEGenerator()
    generator.model = CVAE(CVAEConfig(n_genes=len(GENES), n_classes=3))
    save_model(path, generator, meta={"dp": dp})


def _dp_record(path):
    """What ``fedsynth evaluate --model PATH`` passes as ``dp``: the file's DP record, naming its generator."""
    _, blob = load_model(path)
    return {"generator": blob.get("generator", "cvae"), **blob["dp"]}


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2, self.imgs, self.tags, self.attrs, self.text = [], [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag == "h2":
            self._in_h2 = True
            self.h2.append("")
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2[-1] += data


@pytest.fixture(scope="module")
def report(files):
    d, model = files
    out = d / "out"
    metrics = evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=out,
                             label_column="pam50", synthetic_label_column="label", meta_columns=["age"],
                             dp=_dp_record(model), seed=0, title="Site BH <evaluation>")
    html = (out / "report.html").read_text()
    p = _Parser()
    p.feed(html)
    return metrics, html, p, out


def test_report_has_every_section_in_order(report):
    _, _, p, _ = report
    assert tuple(h.strip() for h in p.h2) == SECTIONS
    assert p.h2[0] == "Verdict"


def test_report_and_metrics_are_marked_site_internal(report):
    """report.html plots real training records: a banner before anything else, and the title, say so."""
    _, html, p, out = report
    banner = "Contains this site's real data: do not share"
    body = html.split("<body>", 1)[1]
    assert body.lstrip().startswith("<div class='internal' role='alert'>Contains this site&#x27;s real data: "
                                    "do not share</div>")
    assert banner in " ".join(p.text)
    title = html.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "do not share" in title and "real data" in title
    metrics = json.loads((out / "metrics.json").read_text())
    assert next(iter(metrics)) == "shareable" and metrics["shareable"] is False


def test_report_images_are_embedded_pngs(report):
    _, _, p, _ = report
    assert len(p.imgs) >= 6  # utility, PCA, marginals, heatmaps, DE, MIA ROC + DCR
    for img in p.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.get("alt")


def test_report_is_self_contained(report):
    _, html, p, _ = report
    assert not {"script", "link", "iframe", "object", "embed"} & set(p.tags)
    for name, value in p.attrs:
        if name in ("src", "href", "action", "srcset"):
            assert value.startswith("data:"), (name, value[:80])
    assert "url(" not in html
    lowered = html.lower()
    assert "http://" not in lowered and "https://" not in lowered


def test_report_escapes_data_and_shows_the_numbers(report):
    metrics, html, p, _ = report
    assert "<b>Her2&</b>" not in html
    assert "&lt;b&gt;Her2&amp;&lt;/b&gt;" in html
    assert "Site BH &lt;evaluation&gt;" in html
    text = " ".join(p.text)
    assert "(epsilon 1, delta 1e-05)-DP, assuming at most 1 colluding site(s)" in text
    assert f"{metrics['utility']['tstr']['logreg']['macro_f1']:.3f}" in text
    for attack in ("distance", "distance_ratio", "domias_kde", "classifier"):
        assert attack in text
    for word in ("GOOD", "FAIR", "POOR"):
        if word in text:
            break
    else:
        pytest.fail("no verdict badge")


def test_metrics_json_matches_and_is_strict_json(report):
    metrics, _, _, out = report
    raw = (out / "metrics.json").read_text()
    on_disk = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert on_disk["verdict"] == metrics["verdict"]
    for key in ("verdict", "utility", "fidelity", "fidelity_reference", "biology", "privacy", "n", "seconds",
                "warnings", "inputs"):
        assert key in on_disk
    dp = on_disk["privacy"]["dp"]
    assert dp["max_colluders"] == 1 and dp["generator"] == "cvae"
    assert "stat_sigma" not in dp, "fields the model leaves empty are not reported"
    assert dp["noise_multipliers"] == {"counts": 5.0, "means": 7.25}
    html = (out / "report.html").read_text()
    assert "counts 5, means 7.25" in html
    # both guarantees: against outsiders (and up to t colluders) and against a participating site
    assert dp["epsilon_vs_site"] == 0.99
    assert "epsilon against outsiders and up to 1 colluding site(s): 0.99" in html
    assert "epsilon against a participating site (it knows its own noise draw): 0.99" in html
    assert "epsilon against a participating site 0.99" in on_disk["verdict"]["privacy"]["headline"]
    assert on_disk["n"] == {"synthetic": 150, "train": 150, "holdout": 60, "genes": 12}
    assert "report" in on_disk["seconds"]


def test_matplotlib_backend_untouched(files, tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    d, model = files
    evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path,
                   label_column="pam50", synthetic_label_column="label", meta_columns=["age"])
    assert matplotlib.get_backend() == before


def test_report_without_model_and_without_dp(files, tmp_path):
    d, _ = files
    m = evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path / "a",
                       label_column="pam50", synthetic_label_column="label", meta_columns=["age"])
    assert m["privacy"]["dp"] is None
    assert "No model file given" in (tmp_path / "a" / "report.html").read_text()
    nodp = tmp_path / "nodp.pt"
    _write_model(nodp, private=False)
    m = evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path / "b",
                       label_column="pam50", synthetic_label_column="label", meta_columns=["age"], dp=_dp_record(nodp))
    assert m["verdict"]["privacy"]["level"] == "poor"
    assert "WITHOUT differential privacy" in (tmp_path / "b" / "report.html").read_text()


def test_no_report_option_writes_metrics_only(files, tmp_path):
    d, _ = files
    evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path, report=False,
                   label_column="pam50", synthetic_label_column="label", meta_columns=["age"])
    assert (tmp_path / "metrics.json").is_file() and not (tmp_path / "report.html").exists()


# ------------------------------------------------------------------ bad inputs


def _eval(d, syn, tmp_path, **kw):
    kw = {"label_column": "pam50", "synthetic_label_column": "label", "meta_columns": ["age"], "report": False,
          **kw}
    return evaluate_files(syn, d / "train.csv", d / "holdout.csv", outdir=tmp_path / "o", **kw)


def test_gene_mismatch_names_both_files(files, tmp_path):
    d, _ = files
    bad = _frame(50, 4, label="label", age=False).rename(columns={"G3": "XIST", "G7": "TP53"})
    bad.to_csv(tmp_path / "syn_genes.csv", index=False)
    with pytest.raises(InputError) as e:
        _eval(d, tmp_path / "syn_genes.csv", tmp_path)
    msg = str(e.value)
    assert "syn_genes.csv" in msg and "train.csv" in msg
    assert "4 genes differ" in msg and "'XIST'" in msg and "'G3'" in msg
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_synthetic_classes_the_site_lacks_are_left_out(files, report, tmp_path):
    """A shared cohort may carry a class only other hospitals have: scored without it, with a warning."""
    d, _ = files
    syn = pd.read_csv(d / "synthetic.csv")
    extra = _frame(30, 5, label="label", age=False, classes=("Unicorn",))
    pd.concat([syn, extra]).to_csv(tmp_path / "syn_extra.csv", index=False)
    m = _eval(d, tmp_path / "syn_extra.csv", tmp_path)
    assert m["n"]["synthetic"] == len(syn)
    assert any("dropped 30 of Unicorn" in w and "syn_extra.csv" in w for w in m["warnings"]), m["warnings"]
    ref = json.loads((d / "out" / "metrics.json").read_text())
    assert m["utility"] == ref["utility"]


def test_synthetic_without_any_real_class_names_both_files(files, tmp_path):
    d, _ = files
    bad = _frame(50, 5, label="label", age=False, classes=("Unicorn", "Griffin"))
    bad.to_csv(tmp_path / "syn_labels.csv", index=False)
    with pytest.raises(InputError) as e:
        _eval(d, tmp_path / "syn_labels.csv", tmp_path)
    msg = str(e.value)
    assert "syn_labels.csv" in msg and "train.csv" in msg and "holdout.csv" in msg and "'LumA'" in msg
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_holdout_gene_mismatch_names_both_files(files, tmp_path):
    d, _ = files
    _frame(40, 6, genes=GENES[:-1] + ["OTHER"]).to_csv(tmp_path / "holdout_bad.csv", index=False)
    with pytest.raises(InputError) as e:
        evaluate_files(d / "synthetic.csv", d / "train.csv", tmp_path / "holdout_bad.csv", outdir=tmp_path / "o",
                       label_column="pam50", synthetic_label_column="label", meta_columns=["age"])
    assert "holdout_bad.csv" in str(e.value) and "train.csv" in str(e.value)


def test_missing_synthetic_label_column_hints_at_option(files, tmp_path):
    d, _ = files
    with pytest.raises(InputError, match="--synthetic-label-column"):
        evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path,
                       label_column="pam50", meta_columns=["age"], synthetic_label_column="pam50")


def test_gene_order_is_fixed_with_a_warning(files, report, tmp_path):
    d, _ = files
    syn = pd.read_csv(d / "synthetic.csv")
    syn[["sample_id", "label"] + GENES[::-1]].to_csv(tmp_path / "reversed.csv", index=False)
    m = _eval(d, tmp_path / "reversed.csv", tmp_path)
    assert any("another order" in w for w in m["warnings"])
    ref = json.loads((d / "out" / "metrics.json").read_text())
    assert m["fidelity"]["mean_pearson"] == pytest.approx(ref["fidelity"]["mean_pearson"])


def test_refuses_to_overwrite(files, tmp_path):
    d, _ = files
    _eval(d, d / "synthetic.csv", tmp_path)
    with pytest.raises(InputError, match="overwrite"):
        _eval(d, d / "synthetic.csv", tmp_path)
    _eval(d, d / "synthetic.csv", tmp_path, overwrite=True)


# ------------------------------------------------------------------ the CLI


def test_cli_evaluate_writes_both_files(files, tmp_path):
    d, model = files
    r = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(d / "synthetic.csv"), "--train",
                                 str(d / "train.csv"), "--holdout", str(d / "holdout.csv"), "--model", str(model),
                                 "--label-column", "pam50", "--synthetic-label-column", "label",
                                 "--meta-columns", "age", "--outdir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "TSTR logreg" in r.output
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "report.html").is_file()


def test_cli_evaluate_mismatch_is_one_line_error(files, tmp_path):
    d, _ = files
    _frame(30, 7, label="label", age=False, genes=[f"X{j}" for j in range(12)]).to_csv(tmp_path / "s.csv",
                                                                                         index=False)
    r = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(tmp_path / "s.csv"), "--train", str(d / "train.csv"),
                                 "--holdout", str(d / "holdout.csv"), "--label-column", "pam50",
                                 "--synthetic-label-column", "label", "--meta-columns", "age",
                                 "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "fedsynth: error:" in r.output and "s.csv" in r.output and "train.csv" in r.output
    assert "Traceback" not in r.output


# ------------------------------------------------------- lifetime budget (--run-record)
LIFETIME = {"ledger": "/data/ledger/<BH>", "unbounded": False, "spent_before": 2.5, "spent_after": 3.4871,
            "limit": 10.0, "remaining": 6.5129}


def _run_json(path, **entries):
    """A train run.json with ``entries`` (e.g. ``lifetime=``) beside the usual ones."""
    path.write_text(json.dumps({"command": "train", "site": "BH", "rank": 0, "epsilon": 1.0, **entries}))
    return path


def test_report_and_metrics_show_the_lifetime_budget(files, tmp_path):
    d, model = files
    m = evaluate_files(d / "synthetic.csv", d / "train.csv", d / "holdout.csv", outdir=tmp_path,
                       label_column="pam50", synthetic_label_column="label", meta_columns=["age"],
                       dp=_dp_record(model), lifetime=LIFETIME)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert m["privacy"]["lifetime"] == on_disk["privacy"]["lifetime"] == LIFETIME
    html = (tmp_path / "report.html").read_text()
    privacy = html.split("<section id='privacy'>", 1)[1].split("</section>", 1)[0]
    assert "<h3>Lifetime budget of this site's patients</h3>" in privacy
    for row in ("<td class='l'>epsilon spent before this run</td><td>2.5</td>",
                "<td class='l'>epsilon spent after this run</td><td>3.487</td>",
                "<td class='l'>cap (--lifetime-epsilon)</td><td>10</td>",
                "<td class='l'>remaining</td><td>6.513</td>",
                "<td class='l'>ledger</td><td>/data/ledger/&lt;BH&gt;</td>"):
        assert row in privacy, row
    assert "unbounded" not in privacy


def test_report_without_run_record_has_no_lifetime(report):
    metrics, html, _, out = report
    assert metrics["privacy"]["lifetime"] is None
    assert json.loads((out / "metrics.json").read_text())["privacy"]["lifetime"] is None
    assert "Lifetime budget of this site" not in html


def test_cli_evaluate_run_record_unbounded_without_cap(files, tmp_path):
    """A --no-dp run on these patients: spend unbounded (JSON null), no cap; report and metrics say so."""
    d, _ = files
    lifetime = {"ledger": "/l", "unbounded": True, "spent_before": 1.25, "spent_after": None, "limit": None,
                "remaining": None}
    run = _run_json(tmp_path / "run.json", lifetime=lifetime)
    r = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(d / "synthetic.csv"), "--train",
                                 str(d / "train.csv"), "--holdout", str(d / "holdout.csv"), "--run-record", str(run),
                                 "--label-column", "pam50", "--synthetic-label-column", "label",
                                 "--meta-columns", "age", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["privacy"]["lifetime"] == lifetime
    html = (tmp_path / "o" / "report.html").read_text()
    assert "unbounded (a run without DP was made on these patients)" in html
    for row in ("<td class='l'>epsilon spent before this run</td><td>1.25</td>",
                "<td class='l'>epsilon spent after this run</td><td>unbounded</td>",
                "<td class='l'>cap (--lifetime-epsilon)</td><td>no cap</td>",
                "<td class='l'>remaining</td><td>no cap</td>"):
        assert row in html, row


@pytest.mark.parametrize("case", ["missing", "no_lifetime", "simulate", "not_json", "null_lifetime", "malformed"])
def test_cli_evaluate_bad_run_record_is_one_line_error(files, tmp_path, case):
    d, _ = files
    run = tmp_path / "run.json"
    if case == "no_lifetime":
        _run_json(run)
    elif case == "simulate":
        _run_json(run, command="simulate", site_lifetime={"BH": LIFETIME})
    elif case == "not_json":
        run.write_text("{not json")
    elif case == "null_lifetime":
        _run_json(run, lifetime=None)
    elif case == "malformed":
        _run_json(run, lifetime={**LIFETIME, "spent_after": "3.5"})
    r = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(d / "synthetic.csv"), "--train",
                                 str(d / "train.csv"), "--holdout", str(d / "holdout.csv"), "--run-record", str(run),
                                 "--label-column", "pam50", "--synthetic-label-column", "label",
                                 "--meta-columns", "age", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedsynth: error: "), r.output
    assert str(run) in lines[0] and "--run-record" in lines[0]
    want = {"missing": "no such file", "no_lifetime": "no 'lifetime' entry", "simulate": "site_lifetime",
            "not_json": "not JSON", "null_lifetime": "no 'lifetime' entry", "malformed": "spent_after"}[case]
    assert want in lines[0]
    assert not (tmp_path / "o").exists(), "nothing written"
