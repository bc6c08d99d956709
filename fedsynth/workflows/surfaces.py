"""Regenerate the option lists of the pipeline and the Galaxy tools from the one table.

The training options are declared once (:mod:`fedsynth.workflows.options`).
This module writes every other place that lists them or the generators:

* ``nextflow_schema.json``: the ``training_options`` group (types, enums,
  bounds, patterns, descriptions);
* ``nextflow.config``: the ``params`` lines of the training options;
* ``conf/modules.config``: the ``FEDERATED_TRAIN`` task's ``ext.args``;
* ``galaxy_tools/fedsynth/macros.xml``: the ``training_options`` form and
  the ``@TRAIN_ARGS@`` command-line token.

Generated text stands between ``BEGIN generated`` / ``END generated``
markers (the whole group in the JSON schema); nothing else in those files
is touched. Run after changing an option or adding a generator::

    .venv/bin/python -m fedsynth.workflows.surfaces          # rewrite
    .venv/bin/python -m fedsynth.workflows.surfaces --check  # exit 1 if stale

``tests/test_surfaces.py`` fails while any of them is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..generators import registry
from .options import Option, train_options

REPO = Path(__file__).resolve().parents[2]
GROUP = "training_options"
#: shared options that keep a value in the pipeline's params (the rest: null = fedsynth train's default)
PIPELINE_DEFAULTS = ("generator", "epsilon", "delta", "no_dp")
MARK = "generated from fedsynth/workflows/options.py by `python -m fedsynth.workflows.surfaces`: do not edit"


def _between(text: str, begin: str, end: str, new: str, path: str) -> str:
    """Replace the lines strictly between the marker lines ``begin`` and ``end``."""
    pat = re.compile(rf"(^[^\n]*{re.escape(begin)}[^\n]*\n)(.*?)(^[^\n]*{re.escape(end)})", re.S | re.M)
    if len(pat.findall(text)) != 1:
        raise RuntimeError(f"{path}: expected one '{begin}' ... '{end}' block")
    return pat.sub(lambda m: m.group(1) + new + m.group(3), text)


def _value(opt: Option):
    return None if opt.default is None else (opt.default if opt.info.parse is None else opt.text(opt.default))


# ------------------------------------------------------------------ Nextflow
def schema_group() -> dict:
    """The JSON-schema group of the training options."""
    props = {}
    for opt in train_options():
        kind = {"int": "integer", "float": "number", "str": "string", "flag": "boolean"}[opt.kind]
        spec: dict = {"type": kind}
        if opt.name in PIPELINE_DEFAULTS:
            spec["default"] = _value(opt)
        if opt.choices:
            spec["enum"] = list(opt.choices)
        for key, attr in (("minimum", "minimum"), ("maximum", "maximum"), ("exclusiveMinimum", "exclusive_minimum"),
                          ("exclusiveMaximum", "exclusive_maximum")):
            if getattr(opt.info, attr) is not None and opt.kind in ("int", "float"):
                spec[key] = getattr(opt.info, attr)
        if opt.info.pattern:
            spec["pattern"] = opt.info.pattern
            spec["errorMessage"] = f"--{opt.name} must be {opt.info.pattern_help}"
        if opt.info.error:
            spec["errorMessage"] = opt.info.error
        default = "" if opt.name in PIPELINE_DEFAULTS or opt.kind == "flag" else (
            f" Unset: fedsynth train's default ({opt.text(opt.default)})." if opt.default is not None
            else " Unset: fedsynth train's default.")
        spec["description"] = opt.help + default
        props[opt.name] = spec
    return {"title": "Training and privacy options", "type": "object", "fa_icon": "fas fa-user-shield",
            "description": "Every site must give the same values. Each generator's own options start with its "
                           "name or say it (cvae, gaussian, pgm, ...); " + MARK + ".",
            "properties": props}


def nextflow_schema(text: str) -> str:
    """``nextflow_schema.json`` with the ``training_options`` group regenerated."""
    schema = json.loads(text)
    defs = schema["$defs"]
    names = {o.name for o in train_options()}
    for key, group in defs.items():
        if key != GROUP:
            for name in names & set(group.get("properties", {})):
                del group["properties"][name]
    new = {}
    for key, group in defs.items():  # the group stays where it was, or goes before synthesis options
        if key == "synthesis_evaluation_options" and GROUP not in defs:
            new[GROUP] = schema_group()
        new[key] = schema_group() if key == GROUP else group
    new.setdefault(GROUP, schema_group())
    schema["$defs"] = new
    refs = [r for r in schema["allOf"] if r.get("$ref") != f"#/$defs/{GROUP}"]
    at = next((i for i, r in enumerate(refs) if r.get("$ref") == "#/$defs/synthesis_evaluation_options"), len(refs))
    schema["allOf"] = refs[:at] + [{"$ref": f"#/$defs/{GROUP}"}] + refs[at:]
    return json.dumps(schema, indent=4, ensure_ascii=False) + "\n"


def _groovy(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def nextflow_config(text: str) -> str:
    """``nextflow.config`` with the training options' params regenerated."""
    width = max(len(o.name) for o in train_options())
    lines = [f"    {o.name:<{width}} = {_groovy(_value(o) if o.name in PIPELINE_DEFAULTS else None)}"
             for o in train_options()]
    return _between(text, "BEGIN generated: training options", "END generated: training options",
                    "\n".join(lines) + "\n", "nextflow.config")


def modules_config(text: str) -> str:
    """``conf/modules.config`` with FEDERATED_TRAIN's training arguments regenerated."""
    lines = []
    width = max(len(o.name) for o in train_options())
    for o in train_options():
        p = f"params.{o.name}"
        if o.kind == "flag":
            lines.append(f"            {p:<{width + 7}} ? '{o.flag}' : '',")
            continue
        quoted = f"q({p})" if o.kind == "str" else p
        cond = f"{p} != null" if o.owner is None else f"{p} != null && params.generator == '{o.owner}'"
        lines.append(f"            {cond} ? \"{o.flag} ${{{quoted}}}\" : '',")
    return _between(text, "BEGIN generated: training options", "END generated: training options",
                    "\n".join(lines) + "\n", "conf/modules.config")


# -------------------------------------------------------------------- Galaxy
def _galaxy_param(o: Option, indent: str) -> str:
    attrs = {"argument": o.flag}  # the name is the argument's (IUC: no redundant name)
    optional = o.default is None
    kind = "select" if o.choices else {"int": "integer", "float": "float", "str": "text", "flag": "boolean"}[o.kind]
    attrs["type"] = kind
    if kind != "select":
        attrs["value"] = "" if optional else str(_value(o))
    if optional:
        attrs["optional"] = "true"
    if kind in ("integer", "float"):  # Galaxy's bounds are inclusive: an exclusive one is the nearest it can say
        for keys, attr in ((("minimum", "exclusive_minimum"), "min"), (("maximum", "exclusive_maximum"), "max")):
            bound = next((getattr(o.info, k) for k in keys if getattr(o.info, k) is not None), None)
            if bound is not None:
                attrs[attr] = repr(bound)
    attrs["label"] = o.info.label or o.name
    default_note = "" if o.default is None or kind == "select" else ""
    attrs["help"] = o.help + default_note + (" Empty: fedsynth's default." if optional else "")
    head = f"{indent}<param " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
    body = []
    if kind == "select":
        for c in o.choices:
            sel = ' selected="true"' if c == _value(o) else ""
            body.append(f"{indent}    <option value={quoteattr(c)}{sel}>{escape(c)}</option>")
    if kind == "text":
        body.append(f'{indent}    <validator type="regex" message={quoteattr("No quotes")}>{escape(chr(94) + "[^" + chr(39) + chr(34) + "]*$")}</validator>')
        if o.info.pattern:
            body.append(f"{indent}    <validator type=\"regex\" message={quoteattr(o.info.pattern_help.capitalize())}>"
                        f"{escape(o.info.pattern)}</validator>")
    if not body:
        return head + "/>"
    return head + ">\n" + "\n".join(body) + f"\n{indent}</param>"


def _galaxy_arg(o: Option, ref: str) -> list[str]:
    if o.kind == "str" or o.choices:
        value = f"'{ref}'"
    else:
        value = ref
    if o.default is None:
        return [f"#if str({ref}).strip():", f"{o.flag} {value}", "#end if"]
    return [f"{o.flag} {value}"]


def galaxy_macros(text: str) -> str:
    """``macros.xml`` with the ``training_options`` form and ``@TRAIN_ARGS@`` regenerated."""
    rows = train_options()
    privacy = [o for o in rows if o.info.group == "privacy" and o.kind != "flag"]
    federation = [o for o in rows if o.info.group == "federation"]
    gen = next(o for o in rows if o.name == "generator")
    i4, i8, i12, i16 = " " * 8, " " * 12, " " * 16, " " * 20
    form = ["    <xml name=\"training_options\">", f"{i4}<conditional name=\"privacy\">",
            f"{i8}<param name=\"mode\" type=\"select\" label=\"Differential privacy\">",
            f"{i12}<option value=\"dp\" selected=\"true\">On: (epsilon, delta)-DP for every patient</option>",
            f"{i12}<option value=\"none\">Off: NOT private, baseline only</option>", f"{i8}</param>",
            f"{i8}<when value=\"dp\">"]
    form += [_galaxy_param(o, i12) for o in privacy]
    form += [f"{i8}</when>", f"{i8}<when value=\"none\"/>", f"{i4}</conditional>", f"{i4}<conditional name=\"gen\">",
             f"{i8}<param argument=\"--generator\" type=\"select\" label=\"Generator\" "
             f"help=\"Every generator spends the same epsilon in one accountant. All sites must choose the same.\">"]
    for name in registry.names():
        sel = ' selected="true"' if name == gen.default else ""
        form.append(f"{i12}<option value=\"{name}\"{sel}>{escape(name + ': ' + registry.summary(name))}</option>")
    form.append(f"{i8}</param>")
    for name in registry.names():
        own = [o for o in rows if o.owner == name]
        if not own:
            form.append(f"{i8}<when value=\"{name}\"/>")
            continue
        form += [f"{i8}<when value=\"{name}\">"] + [_galaxy_param(o, i12) for o in own] + [f"{i8}</when>"]
    form += [f"{i4}</conditional>", f"{i4}<section name=\"advanced\" title=\"Federation options\" expanded=\"false\" "
             "help=\"Every site of one federated run must use the same values.\">"]
    form += [_galaxy_param(o, i8) for o in federation]
    form += [f"{i4}</section>", "    </xml>", ""]

    args = ["    <token name=\"@TRAIN_ARGS@\"><![CDATA[", "#if $privacy.mode == 'dp':"]
    for o in privacy:
        args += _galaxy_arg(o, f"$privacy.{o.name}")
    args += ["#else:", "--no-dp", "#end if", "--generator '$gen.generator'"]
    first = True
    for name in registry.names():
        own = [o for o in rows if o.owner == name]
        if not own:
            continue
        args.append(f"#{'if' if first else 'elif'} $gen.generator == '{name}':")
        first = False
        for o in own:
            args += _galaxy_arg(o, f"$gen.{o.name}")
    if not first:
        args.append("#end if")
    for o in federation:
        args += _galaxy_arg(o, f"$advanced.{o.name}")
    args += ["]]></token>", ""]
    del i16
    return _between(text, "BEGIN generated: training options", "END generated: training options",
                    "\n".join(form + args), "galaxy_tools/fedsynth/macros.xml")


# ---------------------------------------------------------------- the command
TARGETS = {
    "nextflow_schema.json": nextflow_schema,
    "nextflow.config": nextflow_config,
    "conf/modules.config": modules_config,
    "galaxy_tools/fedsynth/macros.xml": galaxy_macros,
}


def regenerate(root: Path = REPO, *, check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, only compare) every target; returns the stale ones."""
    stale = []
    for rel, render in TARGETS.items():
        path = root / rel
        old = path.read_text()
        new = render(old)
        if new != old:
            stale.append(rel)
            if not check:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(new)
                tmp.replace(path)
    return stale


def main(argv=None) -> int:
    """``python -m fedsynth.workflows.surfaces [--check]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    a = ap.parse_args(argv)
    stale = regenerate(check=a.check)
    verb = "stale" if a.check else "rewritten"
    print(f"fedsynth surfaces: {len(stale)} {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
