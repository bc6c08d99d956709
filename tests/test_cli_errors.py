"""Bad inputs through the real CLI: one line on stderr, non-zero exit, no partial output.

Every case runs ``python -m fedsynth train ...`` in its own process (they
are started a few at a time by one module fixture, then judged one test per
case). All of them fail before the session starts, so no party listens; rank
0 is used (it would *host* the rendezvous, so nothing reaches out to the
network either), with short session deadlines in case a check is missed.

The contract checked for each case: exit code != 0; exactly one stderr line
starts with ``fedsynth: error:``, and it is the last stderr line; it names
the file or the parameter and the problem; ``--outdir`` holds no file.
Other stderr lines are allowed (log lines, library warnings) but never a
Python or C++ stack trace.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testkit import PARTY_ENV, PY, REPO, free_port, write_secret

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]

TRACE_MARKERS = ("Traceback (most recent call last)", "frame #", "Exception raised from")


def _site_frame(site_data) -> pd.DataFrame:
    return pd.read_csv(site_data["sites"][0], dtype={"sample_id": str}).iloc[:12].copy()


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    genes = out.columns[2:]
    out[genes] = np.round(2.0 ** out[genes].to_numpy() / 10).astype(int)
    return out


def build_cases(site_data, d: Path) -> dict:
    """name -> dict(args=[...extra train args], data=path, secret=path, expect=[substrings], ...)."""
    d.mkdir(parents=True, exist_ok=True)
    good_secret = write_secret(d / "good.key")
    df = _site_frame(site_data)
    genes = list(df.columns[2:])
    cases = {}

    def data_case(name, frame_or_bytes, expect, suffix=".csv", args=(), header=None):
        path = d / f"{name}{suffix}"
        if isinstance(frame_or_bytes, bytes):
            path.write_bytes(frame_or_bytes)
        elif isinstance(frame_or_bytes, pd.DataFrame):
            if header is not None:
                frame_or_bytes = frame_or_bytes.copy()
                frame_or_bytes.columns = header
            frame_or_bytes.to_csv(path, index=False)
        cases[name] = {"data": path, "expect": [str(path), *expect], "args": list(args)}

    data_case("missing_file", None, ["no such file"])
    data_case("xlsx", b"PK\x03\x04" + os.urandom(200), ["unsupported file format"], suffix=".xlsx")
    data_case("binary_csv", bytes(range(256)) * 20, ["cannot parse as CSV"])
    nan = df.copy()
    nan.loc[3, genes[4]] = np.nan
    data_case("nan_value", nan, ["NaN"])
    neg = _counts(df)
    neg.loc[2, genes[1]] = -3
    data_case("negative_counts", neg, ["negative", "counts"], args=["--input-kind", "counts"])
    frac = _counts(df).astype({genes[2]: float})
    frac.loc[5, genes[2]] = 2.5
    data_case("noninteger_counts", frac, ["non-integer", "counts"], args=["--input-kind", "counts"])
    dup_ids = df.copy()
    dup_ids.loc[4, "sample_id"] = dup_ids.loc[1, "sample_id"]
    data_case("duplicate_sample_ids", dup_ids, ["sample IDs appear more than once", str(df.loc[1, "sample_id"])])
    header = list(df.columns)
    header[2 + 7] = header[2 + 3]
    data_case("duplicate_gene_ids", df, ["gene IDs appear more than once", header[2 + 3]], header=header)
    nolab = df.copy()
    nolab.loc[[2, 6], "label"] = np.nan
    data_case("missing_labels", nolab, ["2 samples have no label", "'label'"])
    data_case("one_sample", df.iloc[:1], ["only 1 sample"])
    const = df.copy()
    const[genes] = 5.0
    data_case("all_genes_constant", const, ["all 50 genes are constant"])

    ok_data = d / "ok.csv"
    df.to_csv(ok_data, index=False)

    empty = d / "empty.key"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    cases["secret_empty"] = {"data": ok_data, "secret": empty, "expect": [str(empty), "secret file is empty"]}
    loose = write_secret(d / "loose.key")
    os.chmod(loose, 0o644)
    cases["secret_world_readable"] = {"data": ok_data, "secret": loose,
                                      "expect": [str(loose), "readable", "chmod 600"]}
    cases["bad_rendezvous_scheme"] = {"data": ok_data, "rendezvous": "http://127.0.0.1:29500",
                                      "expect": ["--rendezvous", "http://127.0.0.1:29500", "tcp://HOST:PORT"]}
    cases["bad_rendezvous_no_port"] = {"data": ok_data, "rendezvous": "tcp://127.0.0.1",
                                       "expect": ["--rendezvous", "tcp://HOST:PORT"]}
    cases["rank_out_of_range"] = {"data": ok_data, "rank": 3, "world_size": 3,
                                  "expect": ["--rank", "0..2", "got 3"]}
    cases["epsilon_zero"] = {"data": ok_data, "args": ["--epsilon", "0"], "expect": ["--epsilon", "> 0"]}
    cases["dp_without_classes"] = {"data": ok_data, "classes": None,
                                   "expect": ["--classes is required with DP", "label set"]}

    existing = d / "existing_out"
    existing.mkdir()
    (existing / "model.pt").write_bytes(b"precious model bytes")
    old = time.time() - 3600
    os.utime(existing / "model.pt", (old, old))
    cases["existing_outputs"] = {"data": ok_data, "outdir": existing,
                                 "expect": [str(existing), "model.pt", "--overwrite"],
                                 "keep": {existing / "model.pt": (b"precious model bytes", old)}}

    for name, c in cases.items():
        c.setdefault("secret", good_secret)
        c.setdefault("outdir", d / f"out_{name}")
        c.setdefault("args", [])
    return cases


#: the bundled data's PAM50 labels: with DP, train requires the shared vocabulary
VOCAB = "Basal,Her2,LumA,LumB,NormalLike"


def train_args(c: dict, port: int) -> list[str]:
    return [PY, "-m", "fedsynth", "train", "--rank", str(c.get("rank", 0)),
            "--world-size", str(c.get("world_size", 2)),
            "--rendezvous", c.get("rendezvous", f"tcp://127.0.0.1:{port}"),
            "--secret-file", str(c["secret"]), "--data", str(c["data"]), "--label-column", "label",
            "--outdir", str(c["outdir"]), "--no-progress", "--rendezvous-timeout", "5", "--step-timeout", "5",
            *(["--classes", c.get("classes", VOCAB)] if c.get("classes", VOCAB) else []), *c["args"]]


@pytest.fixture(scope="module")
def cli_results(site_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    cases = build_cases(site_data, d)
    assert sorted(cases) == sorted(CASE_NAMES)
    results = {}
    names = list(cases)
    batch = 3
    for i in range(0, len(names), batch):
        running = []
        for name in names[i:i + batch]:
            cmd = train_args(cases[name], free_port())
            running.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True, env=PARTY_ENV, cwd=str(REPO))))
        for name, p in running:
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                for _, q in running:
                    if q.poll() is None:
                        q.kill()  # by PID (Popen.kill signals this child only)
                        q.communicate()
                pytest.fail(f"{name}: fedsynth train still running after 120s")
            results[name] = {"code": p.returncode, "stdout": out, "stderr": err}
    return cases, results


CASE_NAMES = [
    "missing_file", "xlsx", "binary_csv", "nan_value", "negative_counts", "noninteger_counts",
    "duplicate_sample_ids", "duplicate_gene_ids", "missing_labels", "one_sample", "all_genes_constant",
    "secret_empty", "secret_world_readable", "bad_rendezvous_scheme", "bad_rendezvous_no_port",
    "rank_out_of_range", "epsilon_zero", "existing_outputs", "dp_without_classes",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gives_one_line_error(cli_results, name):
    cases, results = cli_results
    c, r = cases[name], results[name]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("fedsynth: error:")]
    assert r["code"] != 0, r["stderr"]
    assert len(errs) == 1, r["stderr"]
    assert lines[-1] == errs[0], r["stderr"]
    for part in c["expect"]:
        assert part in errs[0], f"{part!r} not in {errs[0]!r}"
    assert not any(m in r["stderr"] for m in TRACE_MARKERS), r["stderr"]
    out = Path(c["outdir"])
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    keep = c.get("keep", {})
    assert sorted(leftovers) == sorted(p.name for p in keep), leftovers
    for path, (content, mtime) in keep.items():
        assert path.read_bytes() == content
        assert path.stat().st_mtime == pytest.approx(mtime)


def test_bad_input_on_a_non_host_rank_is_one_line(site_data, tmp_path):
    """A site other than rank 0 with a bad file, while no rank 0 is up yet.

    It tries to tell rank 0 why it won't come (``announce_failure``); that
    must not pour the C++ connection errors of torch's TCPStore onto stderr.
    """
    secret = write_secret(tmp_path / "s.key")
    bad = tmp_path / "bad.csv"
    df = _site_frame(site_data)
    df.loc[3, df.columns[5]] = np.nan
    df.to_csv(bad, index=False)
    c = {"data": bad, "secret": secret, "outdir": tmp_path / "out", "args": [], "rank": 1}
    r = subprocess.run(train_args(c, free_port()), capture_output=True, text=True, env=PARTY_ENV,
                       cwd=str(REPO), timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("fedsynth: error:")]
    assert r.returncode != 0
    assert len(errs) == 1 and lines[-1] == errs[0] and str(bad) in errs[0] and "NaN" in errs[0], r.stderr
    assert not any(m in r.stderr for m in TRACE_MARKERS), r.stderr[:3000]


def test_bad_input_at_rank_1_reaches_rank_0_as_a_code_and_step_only(site_data, tmp_path):
    """Issue #11 item 6: error text stays at its site; only the code and the step cross.

    Rank 0 (valid data) hosts the rendezvous and waits; rank 1's file has a
    NaN in the row of a sample whose ID is distinctive. Rank 1's own error
    names that sample (its local stderr), and it announces its failure to
    rank 0, which stops at once, exits non-zero naming rank 1, the code and
    the step, and never shows the sample ID (or the gene) anywhere it writes.
    """
    import socket

    from testkit import start_process, wait_all, describe

    secret = write_secret(tmp_path / "s.key")
    sample_id, df = "PATIENT-4711-PRIVATE", _site_frame(site_data)
    df.loc[3, "sample_id"] = sample_id
    gene = df.columns[5]
    df.loc[3, gene] = np.nan
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    port = free_port()
    c0 = {"data": site_data["sites"][0], "secret": secret, "outdir": tmp_path / "out0", "args": [], "rank": 0}
    c1 = {"data": bad, "secret": secret, "outdir": tmp_path / "out1", "args": [], "rank": 1}
    cmd0 = train_args(c0, port)
    cmd0[cmd0.index("--rendezvous-timeout") + 1] = "120"  # rank 0 waits: rank 1's notice, not the deadline, ends it
    rank0 = start_process(cmd0, tmp_path / "logs", "rank0")
    deadline = time.monotonic() + 120
    while True:  # rank 1 may only fail once rank 0's store listens, or its notice has nowhere to go
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert rank0.poll() is None, describe([rank0])
            assert time.monotonic() < deadline, "rank 0 never listened"
            time.sleep(0.2)
    started = time.monotonic()
    rank1 = start_process(train_args(c1, port), tmp_path / "logs", "rank1")
    codes = wait_all([rank1, rank0], 150)
    assert codes[0] == 2 and codes[1] != 0, describe([rank0, rank1])
    assert time.monotonic() - started < 100, "rank 0 waited for its deadline instead of stopping"
    # rank 1: the full message, locally
    err1 = [ln for ln in rank1.stderr_text().splitlines() if ln.startswith("fedsynth: error:")]
    assert len(err1) == 1 and sample_id in err1[0] and "NaN" in err1[0], rank1.stderr_text()
    # rank 0: the rank, the code and the step; not the sample, the gene, the value or the file
    text0 = rank0.stderr_text() + rank0.stdout_text()
    err0 = [ln for ln in rank0.stderr_text().splitlines() if ln.startswith("fedsynth: error:")]
    assert len(err0) == 1, rank0.stderr_text()
    assert "rank 1" in err0[0] and "input error" in err0[0] and "'setup'" in err0[0], err0[0]
    for secret_text in (sample_id, gene, "NaN", str(bad)):
        assert secret_text not in text0, f"{secret_text!r} reached rank 0:\n{text0[-3000:]}"
    out0 = tmp_path / "out0"
    assert not out0.exists() or not any(out0.iterdir())
