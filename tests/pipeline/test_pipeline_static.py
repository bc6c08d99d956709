"""Static checks of the pipeline's files (no Nextflow run): the parameter
schema matches nextflow.config, and containers/ pins what pyproject.toml pins."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from nfhelpers import REPO

SCHEMA = REPO / "nextflow_schema.json"


def config_params() -> dict:
    """The params { } block of nextflow.config: name -> default (as Python)."""
    text = (REPO / "nextflow.config").read_text()
    block = re.search(r"^params \{\n(.*?)^\}", text, re.S | re.M).group(1)
    out = {}
    for line in block.splitlines():
        m = re.match(r"\s+(\w+)\s*=\s*(.+?)\s*(//.*)?$", line)
        if not m:
            continue
        v = m.group(2)
        if v == "null":
            val = None
        elif v in ("true", "false"):
            val = v == "true"
        elif re.fullmatch(r"'[^']*'", v):
            val = v[1:-1]
        else:
            val = float(v) if re.search(r"[.eE]", v) else int(v)
        out[m.group(1)] = val
    return out


def schema_properties() -> dict:
    schema = json.loads(SCHEMA.read_text())
    props = {}
    for ref in schema["allOf"]:
        group = schema["$defs"][ref["$ref"].split("/")[-1]]
        props.update(group["properties"])
    return props


def test_schema_is_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    # the defaults of nextflow.config validate against it (schema keywords only)
    defaults = {k: v for k, v in config_params().items() if v is not None}
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(defaults)
              if e.validator != "required"]
    assert not errors, errors


def test_every_param_is_in_the_schema_and_back():
    cfg, props = config_params(), schema_properties()
    assert set(cfg) - set(props) == set(), "params of nextflow.config missing from nextflow_schema.json"
    assert set(props) - set(cfg) == set(), "schema parameters without a default in nextflow.config"
    for name, spec in props.items():
        assert spec.get("description"), f"{name}: no description"
        if "default" in spec:
            assert cfg[name] == spec["default"], f"{name}: config default {cfg[name]!r}, schema {spec['default']!r}"
        else:
            assert cfg[name] is None, f"{name}: config sets {cfg[name]!r} but the schema gives no default"


# ----------------------------------------------------------------- containers
def pyproject_pins() -> dict:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for dep in data["project"]["dependencies"]:
        name, version = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", dep).groups()
        pins[name.lower()] = version
    return pins


def crypten_pin() -> str:
    return re.search(r"crypten==([\w.]+)", (REPO / "scripts" / "setup.sh").read_text()).group(1)


def pins_in(text: str) -> dict:
    return {n.lower(): v for n, v in re.findall(r"(?<![\w.\-])([A-Za-z][A-Za-z0-9_.\-]*)==([0-9][\w.]*)", text)}


def test_dockerfile_pins_match_pyproject():
    text = (REPO / "containers" / "Dockerfile").read_text()
    pins = pins_in(text)
    want = pyproject_pins() | {"crypten": crypten_pin()}
    assert pins == want
    assert re.search(r"pip install --no-deps crypten==", text), "crypten must be installed with --no-deps"
    py = re.search(r"^FROM python:(\d+\.\d+)", text, re.M).group(1)
    req = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={py}" in req.replace(" ", ""), f"image python {py} vs requires-python {req}"


def test_conda_environment_pins_match_pyproject():
    text = (REPO / "containers" / "environment.yml").read_text()
    body = "\n".join(line.split("#")[0] for line in text.splitlines())
    pins = pins_in(body)
    want = pyproject_pins() | {"crypten": crypten_pin()}
    extra = {k: v for k, v in pins.items() if k not in want}
    assert {k: pins.get(k) for k in want} == want
    assert extra == {"sklearn": "0.0"}, "only the sklearn shim may be added"
    py = re.search(r"^\s*-\s*python\s*=\s*(\d+\.\d+)\s*$", body, re.M).group(1)
    assert py == re.search(r"FROM python:(\d+\.\d+)", (REPO / "containers" / "Dockerfile").read_text()).group(1)


def test_profiles_and_nf_test_specs_exist():
    cfg = (REPO / "nextflow.config").read_text()
    for profile in ("test", "docker", "singularity", "conda"):
        assert re.search(rf"^\s+{profile}\s*\{{", cfg, re.M), profile
    assert re.search(r"^\s+\*\s+slurm \{", cfg, re.M), "commented slurm example"
    assert "plugins" not in re.sub(r"//.*|/\*.*?\*/", "", cfg, flags=re.S), "no plugins{} (offline)"
    specs = sorted(p.name for p in (REPO / "tests" / "nf-test").glob("*.nf.test"))
    assert specs, "tests/nf-test/*.nf.test"
    for module in ("split_sites", "preprocess", "federated_train", "synthesize", "evaluate", "report"):
        text = (REPO / "modules" / "local" / module / "main.nf").read_text()
        assert "tag " in text and "emit:" in text and "stub:" in text and "versions.yml" in text, module


# ------------------------------------------------- contract with the fedsynth CLI
#: module folder -> (fedsynth command, process name)
MODULES = {
    "preprocess": ("preprocess", "PREPROCESS"),
    "federated_train": ("train", "FEDERATED_TRAIN"),
    "synthesize": ("synthesize", "SYNTHESIZE"),
    "evaluate": ("evaluate", "EVALUATE"),
    "split_sites": ("split-sites", "SPLIT_SITES"),
}


def cli_options(command: str) -> set:
    from fedsynth.cli import main

    return {o for p in main.commands[command].params for o in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_pass_only_options_fedsynth_has(module):
    command, process = MODULES[module]
    text = (REPO / "modules" / "local" / module / "main.nf").read_text()
    call = re.search(rf"fedsynth {command} \\\\\n(.*?)\n\s*\n", text, re.S)
    assert call, f"no `fedsynth {command}` call in {module}"
    flags = set(re.findall(r"(--[a-z][a-z-]+)", call.group(1)))
    config = (REPO / "conf" / "modules.config").read_text()
    block = re.search(rf"withName: '{process}' \{{(.*?)(?=\n    withName|\Z)", config, re.S)
    if block:
        code = re.sub(r"//.*", "", block.group(1))
        flags |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", code))
    unknown = flags - cli_options(command)
    assert not unknown, f"{module} passes options `fedsynth {command}` does not have: {sorted(unknown)}"


def test_explicit_privacy_defaults_are_fedsynths():
    from fedsynth.cli import main

    defaults = {p.name: p.default for p in main.commands["train"].params}
    cfg = config_params()
    assert cfg["epsilon"] == defaults["epsilon"] and cfg["delta"] == defaults["delta"]
    # the other training options are left unset, i.e. to fedsynth's own defaults
    for name in ("epochs", "batch_size", "lr", "clip", "stats_fraction", "max_colluders", "step_timeout",
                 "rendezvous_timeout"):
        assert cfg[name] is None and name in defaults, name


# ------------------------------------------------- modules/local/*/meta.yml
MODULE_DIRS = sorted(p.parent for p in (REPO / "modules" / "local").glob("*/main.nf"))


def process_channels(main_nf: str) -> tuple[str, list, dict]:
    """A process's name, its input channels (each a list of element names) and
    its outputs (emit name -> element names), as main.nf declares them."""
    name = re.search(r"^process (\w+) \{", main_nf, re.M).group(1)

    def block(section):
        m = re.search(rf"^    {section}:\n(.*?)(?=^    \w+:\n|\Z)", main_nf, re.S | re.M)
        lines = [re.sub(r"//.*", "", line).strip() for line in (m.group(1).splitlines() if m else [])]
        return [line for line in lines if line]

    def elements(decl):
        names = []
        for item in re.sub(r"^tuple\s+", "", decl).split(","):
            q = re.fullmatch(r"\s*(val|path|env|file)\s*(?:\(\s*(.+?)\s*\)|\s(.+?))\s*", item)
            if q:
                names.append((q.group(1), (q.group(2) or q.group(3)).strip().strip("'\"")))
        return names

    inputs = [elements(decl) for decl in block("input")]
    outputs = {re.search(r"emit:\s*(\w+)", decl).group(1): elements(decl) for decl in block("output")}
    return name, inputs, outputs


def test_every_module_folder_has_a_meta_yml():
    assert MODULE_DIRS, "modules/local/*/main.nf"
    missing = [d.name for d in MODULE_DIRS if not (d / "meta.yml").is_file()]
    assert not missing, f"modules/local/<name>/meta.yml missing for {missing}"


#: channel element qualifier -> the meta.yml types that fit it
QUALIFIER_TYPES = {"path": {"file", "directory"}, "val": {"map", "string", "integer", "float", "boolean", "list"}}


def check_elements(where: str, elements: list, declared: list) -> None:
    """meta.yml's elements of one channel: main.nf's names, in order, each typed, described (and a path with a pattern)."""
    got = [next(iter(e.items())) for e in elements]
    assert [n for n, _ in got] == [n for _, n in declared], f"{where}: meta.yml names differ from main.nf's"
    for (kind, name), (_, spec) in zip(declared, got):
        assert spec.get("description"), f"{where}: {name} has no description"
        assert spec.get("type") in QUALIFIER_TYPES[kind], f"{where}: {name} is a {kind}, not a {spec.get('type')}"
        assert name != "meta" or spec["type"] == "map", f"{where}: meta is a map"
        assert kind != "path" or spec.get("pattern"), f"{where}: {name} has no pattern"


@pytest.mark.parametrize("module", [d.name for d in MODULE_DIRS])
def test_meta_yml_matches_the_process(module):
    import yaml

    folder = REPO / "modules" / "local" / module
    process, inputs, outputs = process_channels((folder / "main.nf").read_text())
    meta = yaml.safe_load((folder / "meta.yml").read_text())
    assert meta["name"] == module and process == module.upper(), (meta["name"], process)
    assert meta["description"].strip() and len(meta["keywords"]) >= 3
    assert meta["authors"] and meta["maintainers"]
    for tool in meta["tools"]:
        (spec,) = tool.values()
        assert spec["description"] and spec["homepage"] and spec["licence"], tool
    meta_inputs = meta.get("input") or []
    assert len(meta_inputs) == len(inputs), f"{module}: meta.yml has {len(meta_inputs)} input channels, main.nf {len(inputs)}"
    for i, (elements, declared) in enumerate(zip(meta_inputs, inputs)):
        check_elements(f"{module} input {i}", elements, declared)
    meta_outputs = {name: elements for o in meta["output"] for name, elements in o.items()}
    assert list(meta_outputs) == list(outputs), f"{module}: meta.yml output names differ from main.nf's emit: names"
    for emit, declared in outputs.items():
        check_elements(f"{module} emit {emit}", meta_outputs[emit], declared)
