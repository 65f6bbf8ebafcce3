"""``fulmen plugins --json`` against the JSON Schema that ``docs/plugins.md`` documents.

The schema is read from the fenced ``json`` block of the section "The ``fulmen plugins
--json`` schema", so the documentation and the command cannot drift apart: a new field, a
renamed one or a new status fails here until the docs say so. The check runs the real
command in a subprocess, once as installed and once with plugins on disk that load, fail to
import, require another fulmen and are denied, so that every status appears.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
HEADING = "## The `fulmen plugins --json` schema"


def documented_schema() -> Dict[str, Any]:
    text = DOC.read_text()
    assert HEADING in text, f"docs/plugins.md lost its section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the schema section should hold exactly one ```json block"
    return json.loads(blocks[0])


# ------------------------------------------------------------------ a small validator
# The keywords the documented schema uses; anything else is refused rather than ignored,
# so the schema cannot say more than this test checks. (jsonschema is not a test dependency.)
KNOWN = {"$schema", "type", "required", "properties", "additionalProperties", "items", "enum", "propertyNames"}
TYPES = {"object": dict, "array": list, "string": str, "null": type(None)}


def violations(value: Any, schema: Dict[str, Any], where: str = "$") -> List[str]:
    unknown = set(schema) - KNOWN
    if unknown:
        raise AssertionError(f"the schema uses keywords this validator does not check: {sorted(unknown)}")
    found: List[str] = []
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(isinstance(value, TYPES[name]) for name in allowed):
            return [f"{where}: {type(value).__name__} is not {' or '.join(allowed)}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{where}: missing {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema:
                found += violations(key, schema["propertyNames"], f"{where} key {key!r}")
            if key in properties:
                found += violations(item, properties[key], f"{where}.{key}")
            elif extra is False:
                found.append(f"{where}: {key!r} is not documented")
            elif isinstance(extra, dict):
                found += violations(item, extra, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += violations(item, schema["items"], f"{where}[{index}]")
    return found


# ------------------------------------------------------------------ running the command


def run_plugins_json(pythonpath: List[Path] = (), **env_vars: str) -> Dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULMEN_") and k != "PYTHONPATH"}
    paths = [str(p) for p in pythonpath] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(env_vars)
    result = subprocess.run(
        [sys.executable, "-m", "fulmen", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # warnings go to stderr; stdout is the document alone


def write_dist(site: Path, name: str, module: str, source: str, requires: str = "fulmen>=0.1") -> None:
    """A distribution as ``pip install --target`` lays it out: its module and its metadata."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\nRequires-Dist: {requires}\n")
    (info / "entry_points.txt").write_text(f"[fulmen.plugins]\n{module} = {module}\n")


GOOD = '''
import fulmen


@fulmen.hookimpl
def register_strategies(register):
    from fulmen.strategies import SingleDeviceStrategy

    register("docs_schema_strategy", SingleDeviceStrategy, "a strategy for the schema test")
'''


def test_the_schema_block_is_valid_json_with_the_documented_statuses():
    schema = documented_schema()
    row = schema["properties"]["plugins"]["items"]
    assert row["properties"]["status"]["enum"] == ["loaded", "failed", "incompatible", "disabled"]
    assert set(row["required"]) == set(row["properties"]), "every documented field is always present"


def test_output_as_installed_matches_the_documented_schema():
    output = run_plugins_json()
    assert violations(output, documented_schema()) == []
    builtins = output["plugins"][0]
    assert (builtins["name"], builtins["target"], builtins["status"]) == ("fulmen", "fulmen.builtins", "loaded")
    assert "single_device" in builtins["registers"]["strategy"]


def test_every_status_matches_the_documented_schema(tmp_path):
    sites = [tmp_path / name for name in ("good", "broken", "future", "denied")]
    write_dist(sites[0], "docs-schema-good", "docs_schema_good", GOOD)
    write_dist(sites[1], "docs-schema-broken", "docs_schema_broken", "raise ImportError('no backend here')\n")
    write_dist(sites[2], "docs-schema-future", "docs_schema_future", GOOD.replace("docs_schema_strategy", "x"),
               requires="fulmen>=99")
    write_dist(sites[3], "docs-schema-denied", "docs_schema_denied", GOOD.replace("docs_schema_strategy", "y"))
    output = run_plugins_json(sites, FULMEN_PLUGINS_DENY="docs_schema_denied")
    assert violations(output, documented_schema()) == []
    rows = {row["name"]: row for row in output["plugins"]}
    assert rows["docs_schema_good"]["status"] == "loaded"
    assert rows["docs_schema_good"]["registers"] == {"strategy": ["docs_schema_strategy"]}
    assert rows["docs_schema_good"]["requirement"] == "fulmen>=0.1"
    assert rows["docs_schema_broken"]["status"] == "failed"
    assert "no backend here" in rows["docs_schema_broken"]["reason"]
    assert rows["docs_schema_future"]["status"] == "incompatible"
    assert rows["docs_schema_denied"]["status"] == "disabled"


@pytest.mark.parametrize(
    "change, complaint",
    [
        (lambda doc: doc["plugins"][0].update(origin="somewhere"), "'origin' is not documented"),
        (lambda doc: doc["plugins"][0].update(status="found"), "is not one of"),
        (lambda doc: doc["plugins"][0].update(version=1), "int is not string or null"),
        (lambda doc: doc["plugins"][0].pop("reason"), "missing 'reason'"),
        (lambda doc: doc["plugins"][0]["registers"].update(widget=["w"]), "key 'widget'"),
        (lambda doc: doc["plugins"][0]["unavailable"].update(logger={"x": 3}), "int is not string"),
        (lambda doc: doc.update(extra=True), "'extra' is not documented"),
    ],
)
def test_the_validator_rejects_what_the_schema_does_not_allow(change, complaint):
    document = {
        "fulmen_version": "0.1.0",
        "plugins": [{"name": "fulmen", "distribution": "fulmen", "version": "0.1.0", "target": "fulmen.builtins",
                     "status": "loaded", "reason": "", "requirement": "", "registers": {"strategy": ["a"]},
                     "unavailable": {}, "backends": []}],
    }
    assert violations(document, documented_schema()) == []
    change(document)
    found = violations(document, documented_schema())
    assert any(complaint in line for line in found), found
