"""Run fedsynth's Galaxy tools in a real Galaxy server on 127.0.0.1.

Used by ``tests/galaxy/test_galaxy_tools.py`` (pytest) and by
``scripts/galaxy_test.sh`` (``python tests/galaxy/galaxy_harness.py``):

1. ``planemo lint`` over ``galaxy_tools/``;
2. a throw-away Galaxy (sqlite, LocalJobRunner with 4 workers) on a free
   127.0.0.1 port, the ``fedsynth`` requirement resolved by the
   ``galaxy_packages`` resolver (``deps/fedsynth/0.1.0/env.sh`` puts the
   project's ``bin/`` on PATH), exactly as the README tells an admin;
3. every tool test with ``galaxy-tool-test``;
4. three ``fedsynth_train`` jobs in one history that join one session
   (ranks 0, 1, 2 on a free port) and must end with identical weights.

The server runs in its own process group; ``stop()`` ends it and every
process it started, by PID, also when a test fails. Galaxy itself lives in
``~/.cache/fedsynth-galaxy-26.1.2/`` (``scripts/install_galaxy.sh``; ``GALAXY_HOME``), never in the project's .venv.
Only the standard library is used here, plus torch (the project's .venv)
to compare the three models.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "galaxy_tools"
TEST_DATA = TOOLS / "fedsynth" / "test-data"
GALAXY_VERSION = "26.1.2"
#: where scripts/install_galaxy.sh puts Galaxy and planemo (same default as there)
GALAXY_HOME = Path(os.environ.get("GALAXY_HOME") or Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / f"fedsynth-galaxy-{GALAXY_VERSION}").absolute()
GALAXY_VENV = GALAXY_HOME / "venv"
PLANEMO = GALAXY_HOME / "planemo" / "bin" / "planemo"
TOOL_IDS = ["fedsynth_preprocess", "fedsynth_train", "fedsynth_synthesize", "fedsynth_evaluate",
            "fedsynth_simulate"]
FEDSYNTH_VERSION = "0.1.0"
ADMIN_EMAIL = "admin@fedsynth.test"


def log(msg: str) -> None:
    print(f"[galaxy-test {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ install / lint
def installed() -> bool:
    return ((GALAXY_VENV / ".fedsynth-installed").is_file()
            and (GALAXY_HOME / "planemo" / ".fedsynth-installed").is_file())


def ensure_installed() -> None:
    """Run scripts/install_galaxy.sh (idempotent: returns at once when up to date)."""
    subprocess.run([str(ROOT / "scripts" / "install_galaxy.sh")], check=True)


def lint() -> subprocess.CompletedProcess:
    """planemo lint, failing on warnings (offline: no DOI/URL/conda checks)."""
    return subprocess.run(
        [str(PLANEMO), "lint", "--fail_level", "warn", "--skip", "BioToolsValid", "-r", str(TOOLS)],
        capture_output=True, text=True, cwd=ROOT)


# ------------------------------------------------------------------ server
def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class GalaxyServer:
    """A throw-away Galaxy server on 127.0.0.1, started and stopped by PID."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = secrets.token_hex(16)
        self.user_key: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "galaxy.log"

    # -- configuration --------------------------------------------------
    def write_config(self) -> Path:
        w = self.workdir
        (w / "data").mkdir(parents=True, exist_ok=True)
        # the fedsynth requirement, resolved as an admin would (see README)
        dep = w / "deps" / "fedsynth" / FEDSYNTH_VERSION
        dep.mkdir(parents=True, exist_ok=True)
        (dep / "env.sh").write_text(f'PATH="{ROOT / "bin"}:$PATH"\nexport PATH\n')
        tools = "\n".join(f'    <tool file="fedsynth/{t}.xml"/>' for t in TOOL_IDS)
        (w / "tool_conf.xml").write_text(
            f'<?xml version="1.0"?>\n<toolbox tool_path="{TOOLS}">\n'
            f'  <section id="fedsynth" name="Federated synthetic data (fedsynth)">\n{tools}\n  </section>\n'
            f'</toolbox>\n')
        # the evaluate report is a full HTML page: let Galaxy show it unsanitised
        (w / "sanitize_allowlist.txt").write_text("fedsynth_evaluate\n")
        # no remote data tables (the sample config fetches one over the internet)
        (w / "tool_data_table_conf.xml").write_text("<tables/>\n")
        config = {
            "galaxy": {
                "data_dir": str(w / "data"),
                "database_connection": f"sqlite:///{w / 'data' / 'universe.sqlite'}?isolation_level=IMMEDIATE&timeout=120",
                "database_auto_migrate": True,
                "tool_config_file": str(w / "tool_conf.xml"),
                "tool_dependency_dir": str(w / "deps"),
                "dependency_resolvers": [{"type": "galaxy_packages"}],
                "conda_auto_init": False,
                "conda_auto_install": False,
                "id_secret": secrets.token_hex(16),
                "admin_users": ADMIN_EMAIL,
                "bootstrap_admin_api_key": self.admin_key,
                "allow_path_paste": True,
                "enable_celery_tasks": False,
                # traffic to 127.0.0.1 only: no remote data tables, no container tooling downloads
                "tool_data_table_config_path": str(w / "tool_data_table_conf.xml"),
                "enable_mulled_containers": False,
                "involucro_auto_init": False,
                "watch_tools": "false",
                "sanitize_allowlist_file": str(w / "sanitize_allowlist.txt"),
                "cleanup_job": "onsuccess",
                "job_config": {
                    "runners": {"local": {"load": "galaxy.jobs.runners.local:LocalJobRunner", "workers": 4}},
                    "execution": {"default": "local", "environments": {"local": {"runner": "local"}}},
                },
            }
        }
        path = w / "galaxy.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout: float = 300.0) -> "GalaxyServer":
        cfg = self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GALAXY_", "VIRTUAL_ENV", "PYTHON"))}
        env["PATH"] = f"{GALAXY_VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["TMPDIR"] = str(self.workdir / "tmp")
        (self.workdir / "tmp").mkdir(exist_ok=True)
        log(f"starting Galaxy on {self.url} (log: {self.log_path})")
        t0 = time.monotonic()
        fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(GALAXY_VENV / "bin" / "galaxy-web"), "-c", str(cfg), "-b", f"127.0.0.1:{self.port}"],
            cwd=self.workdir, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        fh.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Galaxy exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                version = self.api("GET", "/api/version")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Galaxy did not answer within {timeout:.0f}s:\n{self.log_tail()}")
                time.sleep(1)
        log(f"Galaxy {version.get('version_major')}.{version.get('version_minor')} up in "
            f"{time.monotonic() - t0:.0f}s (pid {self.proc.pid})")
        self.user_key = self.create_user()
        return self

    def stop(self) -> None:
        """End the server and everything it started (jobs), by PID."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            kids = _descendants(pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            for k in kids + _descendants(pid):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            log(f"Galaxy (pid {pid}) stopped")
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- API --------------------------------------------------------------
    def api(self, method: str, path: str, data=None, *, key: str | None = None, raw: bool = False,
            timeout: float = 60):
        url = self.url + path
        body = None
        headers = {"x-api-key": key} if key else {}
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None
        return payload if raw else json.loads(payload or b"null")

    def create_user(self) -> str:
        email = f"tester-{secrets.token_hex(3)}@fedsynth.test"
        user = self.api("POST", "/api/users", {"username": email.split("@")[0], "email": email,
                                                 "password": secrets.token_hex(12)}, key=self.admin_key)
        return self.api("POST", f"/api/users/{user['id']}/api_key", key=self.admin_key)

    def user_api(self, method, path, data=None, **kw):
        return self.api(method, path, data, key=self.user_key, **kw)

    # -- tool tests ------------------------------------------------------
    def run_tool_tests(self, outdir: Path, parallel: int = 2, timeout: float = 1800) -> dict:
        """Run every tool test with galaxy-tool-test; returns {'passed', 'failed', 'results', 'missing'}.

        One galaxy-tool-test process per tool, all at once (each running up
        to ``parallel`` of its tests at a time), so Galaxy's job workers stay
        busy; their JSON reports are merged.
        """
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        procs = {}
        for tool in TOOL_IDS:
            cmd = [str(GALAXY_VENV / "bin" / "galaxy-tool-test"), "-u", self.url, "-k", self.user_key,
                   "-a", self.admin_key, "-t", tool, "-j", str(outdir / f"{tool}.json"),
                   "-o", str(outdir / "outputs" / tool), "--parallel-tests", str(parallel),
                   "--history-name", f"tool tests: {tool}", "--test-data", str(TEST_DATA)]
            fh = open(outdir / f"{tool}.log", "wb")
            procs[tool] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=outdir), fh, time.monotonic())
        results: list[dict] = []
        deadline = time.monotonic() + timeout
        for tool, (proc, fh, t0) in procs.items():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                log(f"{tool}: galaxy-tool-test still running after {timeout:.0f}s; killing it (pid {proc.pid})")
                proc.kill()
                proc.wait()
            fh.close()
            log(f"{tool}: galaxy-tool-test exit {proc.returncode} after {time.monotonic() - t0:.0f}s")
            report = outdir / f"{tool}.json"
            if not report.exists():
                continue
            for t in json.loads(report.read_text()).get("tests", []):
                d = t.get("data", {})
                job = d.get("job") or {}
                results.append({"id": t.get("id"), "tool_id": d.get("tool_id"), "index": d.get("test_index"),
                                "status": d.get("status"),
                                "problems": d.get("output_problems") or d.get("execution_problem"),
                                "job_stderr": (job.get("stderr") or "")[-1500:],
                                "seconds": d.get("time_seconds")})
        counted = {(r["tool_id"], r["index"]) for r in results}
        missing = [f"{t}-{i}" for t, i in expected_tests() if (t, i) not in counted]
        passed = sum(r["status"] == "success" for r in results)
        failed = len(results) - passed + len(missing)
        return {"passed": passed, "failed": failed, "results": results, "missing": missing}

    # -- the three-site session ----------------------------------------
    def upload(self, history_id: str, name: str, content: str, ext: str) -> str:
        resp = self.user_api("POST", "/api/tools/fetch", {
            "history_id": history_id,
            "targets": [{"destination": {"type": "hdas"},
                         "elements": [{"src": "pasted", "paste_content": content, "name": name, "ext": ext,
                                       "dbkey": "?", "to_posix_lines": True}]}],
        })
        return resp["outputs"][0]["id"]

    def wait_datasets(self, ids, timeout: float = 600):
        deadline = time.monotonic() + timeout
        for i in ids:
            while True:
                state = self.user_api("GET", f"/api/datasets/{i}")["state"]
                if state == "ok":
                    break
                if state in ("error", "failed_metadata", "discarded") or time.monotonic() > deadline:
                    raise RuntimeError(f"dataset {i}: state {state}")
                time.sleep(1)

    def wait_jobs(self, job_ids, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        states = {}
        while True:
            states = {j: self.user_api("GET", f"/api/jobs/{j}")["state"] for j in job_ids}
            if all(s in ("ok", "error", "failed", "deleted") for s in states.values()):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(2)


def expected_tests() -> list[tuple[str, int]]:
    """(tool id, test index) of every <test> in the tool XMLs."""
    import xml.etree.ElementTree as ET

    out = []
    for tool in TOOL_IDS:
        root = ET.parse(TOOLS / "fedsynth" / f"{tool}.xml").getroot()
        out += [(tool, i) for i in range(len(root.findall("./tests/test")))]
    return out


def three_site_session(server: GalaxyServer, workdir: Path, timeout: float = 420) -> dict:
    """Three fedsynth_train jobs (ranks 0, 1, 2) in one Galaxy join one session.

    Uploads the three site matrices and a fresh secret (a txt dataset), runs
    the tool three times on a free port, waits, downloads the models and
    compares their weights. Returns a dict with the job states, the models'
    state dicts equality, and the run records; raises on any failure.
    """
    import torch

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    hist = server.user_api("POST", "/api/histories", {"name": "fedsynth three-site session"})["id"]
    sites = ["BH", "A8", "A2"]
    data = {s: server.upload(hist, f"site_{s}.csv", (TEST_DATA / f"site_{s}.csv").read_text(), "csv") for s in sites}
    secret_id = server.upload(hist, "session secret", secret + "\n", "txt")
    server.wait_datasets(list(data.values()) + [secret_id])
    port = free_port()
    jobs, outputs = [], []
    for rank, site in enumerate(sites):
        inputs = {
            "data": {"src": "hda", "id": data[site]},
            "matrix|labels|source": "column",
            "matrix|labels|label_column": "pam50",
            "matrix|meta_columns": "age",
            "federation|rank": rank,
            "federation|world_size": len(sites),
            "federation|rendezvous": f"tcp://127.0.0.1:{port}",
            "federation|secret": {"src": "hda", "id": secret_id},
            "federation|site_name": site,
            "privacy|mode": "dp",
            "privacy|epsilon": 1.0,
            "advanced|classes": "LumA,LumB,Basal,Her2,NormalLike",
            "advanced|step_timeout": 120,
            "advanced|rendezvous_timeout": 240,
        }
        resp = server.user_api("POST", "/api/tools", {"tool_id": "fedsynth_train", "history_id": hist,
                                                       "inputs": inputs})
        jobs.append(resp["jobs"][0]["id"])
        outputs.append({o["output_name"]: o["id"] for o in resp["outputs"]})
    log(f"three-site session: jobs {jobs} on tcp://127.0.0.1:{port}")
    states = server.wait_jobs(jobs, timeout)
    details = [server.user_api("GET", f"/api/jobs/{j}?full=true") for j in jobs]
    if any(s != "ok" for s in states.values()):
        msg = "\n".join(f"--- job {d['id']} ({d['state']}) stderr:\n{(d.get('stderr') or '')[-2000:]}" for d in details)
        raise AssertionError(f"three-site session jobs did not all succeed: {states}\n{msg}")
    # the secret's content appears nowhere in what Galaxy shows about the jobs, not even to an
    # admin (who sees the command line): fedsynth reads a private copy made inside the job
    for j, d in zip(jobs, details):
        admin_view = server.api("GET", f"/api/jobs/{j}?full=true", key=server.admin_key)
        assert "--secret-file session.key" in (admin_view.get("command_line") or ""), admin_view.get("command_line")
        shown = (json.dumps(d) + json.dumps(admin_view)
                 + json.dumps(server.user_api("GET", f"/api/jobs/{j}/parameters_display")))
        assert secret not in shown, f"job {j}: the session secret is visible in the job details"
    models, runs = [], []
    for i, out in enumerate(outputs):
        path = workdir / f"model_rank{i}.pt"
        path.write_bytes(server.user_api("GET", f"/api/datasets/{out['model']}/display?preview=false", raw=True))
        models.append(torch.load(path, map_location="cpu", weights_only=True))
        runs.append(json.loads(server.user_api("GET", f"/api/datasets/{out['run_json']}/display?preview=false",
                                               raw=True)))
    ref = models[0]["state_dict"]
    identical = all(
        set(m["state_dict"]) == set(ref) and all(torch.equal(m["state_dict"][k], ref[k]) for k in ref)
        for m in models[1:])
    return {"states": states, "identical": identical, "runs": runs, "models": models, "n_tensors": len(ref)}


# ------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None, help="Server and result folder (default: a fresh temp dir)")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder")
    ap.add_argument("--parallel", type=int, default=2, help="galaxy-tool-test --parallel-tests")
    ap.add_argument("--skip-session", action="store_true", help="Skip the three-site session test")
    args = ap.parse_args(argv)

    t_all = time.monotonic()
    ensure_installed()
    passed = failed = 0
    t0 = time.monotonic()
    res = lint()
    log(f"planemo lint: exit {res.returncode} in {time.monotonic() - t0:.0f}s")
    if res.returncode == 0:
        passed += 1
    else:
        failed += 1
        print(res.stdout + res.stderr)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fedsynth-galaxy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = GalaxyServer(workdir / "server")
    try:
        server.start()
        t0 = time.monotonic()
        tt = server.run_tool_tests(workdir / "tool-tests", parallel=args.parallel)
        for r in tt["results"]:
            print(f"{'PASS' if r['status'] == 'success' else 'FAIL'}  {r['id']}")
            if r["status"] != "success":
                print(f"      {r['problems']}\n      {r['job_stderr']}")
        for m in tt["missing"]:
            print(f"FAIL  {m} (not run)")
        log(f"tool tests: {tt['passed']} passed, {tt['failed']} failed in {time.monotonic() - t0:.0f}s")
        passed += tt["passed"]
        failed += tt["failed"]
        if not args.skip_session:
            t0 = time.monotonic()
            try:
                s = three_site_session(server, workdir / "session")
                ok = s["identical"]
                log(f"three-site session: {s['states']}, identical weights: {ok} ({s['n_tensors']} tensors) "
                    f"in {time.monotonic() - t0:.0f}s")
            except Exception as e:  # noqa: BLE001 - reported, counted as a failure
                ok = False
                print(f"FAIL  three-site session: {e}")
            print(f"{'PASS' if ok else 'FAIL'}  three-site session")
            passed += ok
            failed += not ok
    except Exception as e:  # noqa: BLE001
        failed += 1
        print(f"FAIL  Galaxy server: {e}")
    finally:
        server.stop()
        if not args.keep and args.workdir is None and failed == 0:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        elif failed:
            log(f"kept {workdir} for inspection")
    log(f"total {time.monotonic() - t_all:.0f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
