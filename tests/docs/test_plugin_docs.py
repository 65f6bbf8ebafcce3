"""``docs/plugins.md`` documents every hook of ``fulmen/hookspecs.py`` with its exact
signature, when it fires, its return value and an example (datasette's docs test, for us).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from fulmen import hookspecs
from fulmen.plugins import deprecations

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
HEADING = re.compile(r"^### `(\w+)\(([^)]*)\)`$", re.MULTILINE)


def hook_functions():
    return {
        name: obj for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and getattr(obj, f"{hookspecs.PROJECT_NAME}_spec", None) is not None
    }


def documented():
    """{hook: (argument text, section text)} from the ``### `hook(args)` `` headings."""
    text = DOC.read_text()
    matches = list(HEADING.finditer(text))
    sections = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        end = min(end, text.find("\n## ", match.end()) if text.find("\n## ", match.end()) != -1 else end)
        sections[match.group(1)] = (match.group(2), text[match.end():end])
    return sections


def test_every_hook_has_a_section_with_its_exact_signature():
    docs = documented()
    missing = sorted(set(hook_functions()) - set(docs))
    assert not missing, f"hooks missing from docs/plugins.md (add a '### `hook(args)`' section): {missing}"
    for name, function in hook_functions().items():
        expected = ", ".join(inspect.signature(function).parameters)
        assert docs[name][0] == expected, (
            f"docs/plugins.md documents {name}({docs[name][0]}), hookspecs.py defines {name}({expected})")


def test_no_section_documents_a_hook_that_does_not_exist():
    stale = sorted(set(documented()) - set(hook_functions()))
    assert not stale, f"docs/plugins.md documents hooks that hookspecs.py does not define: {stale}"


@pytest.mark.parametrize("name", sorted(hook_functions()))
def test_each_section_says_when_it_fires_what_it_returns_and_shows_an_example(name):
    _, section = documented()[name]
    assert "**Fires:**" in section, f"{name}: say when it fires"
    assert "**Return value:**" in section, f"{name}: say what a return value means"
    examples = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert examples, f"{name}: add a short example"
    ast.parse(examples[0])  # the example is valid Python
    assert name in examples[0], f"{name}: the example should implement the hook"


def test_deprecated_hooks_are_listed_in_the_docs():
    text = DOC.read_text()
    listed = text.split("### Deprecated hooks", 1)[1].split("\n## ", 1)[0]
    if not deprecations.DEPRECATED_HOOKS and not deprecations.DEPRECATED_ARGUMENTS:
        assert listed.strip().startswith("None."), "no hook is deprecated: the section should say 'None.'"
    for hook in deprecations.DEPRECATED_HOOKS:
        assert f"`{hook}`" in listed, f"deprecations.py deprecates {hook}; list it under 'Deprecated hooks'"
    for hook, argument in deprecations.DEPRECATED_ARGUMENTS:
        assert f"`{hook}`" in listed and f"`{argument}`" in listed


def test_environment_variables_and_entry_point_groups_are_documented():
    text = DOC.read_text() + (ROOT / "docs" / "distributions.md").read_text()
    for name in ("fulmen.plugins", "fulmen.config", "FULMEN_DISABLE_PLUGIN_AUTOLOAD", "FULMEN_PLUGINS_ALLOW",
                 "FULMEN_PLUGINS_DENY", "FULMEN_TRACE_PLUGINS", "FULMEN_CONFIG", "FULMEN_REQUIRE_PLUGINS",
                 "FULMEN_DEFAULT_STRATEGY", "fulmen plugins --check", 'pytest_plugins = ["fulmen.testing"]'):
        assert name in text, name


def test_readme_points_to_the_plugin_docs():
    readme = (ROOT / "README.md").read_text()
    assert "docs/plugins.md" in readme and "docs/distributions.md" in readme
