"""Where the plugin machinery's names live after the split (issue 11), and that the places
callers have always imported them from still give the same objects.

``policy`` owns the allow/deny rule, ``settings`` reads the configuration, ``config``
applies it, ``registry`` holds the precision aliases; the old spellings are re-exports.
"""

from __future__ import annotations

from fulmen.fabric import connector
from fulmen.plugins import config, discovery, policy, registry, settings


def test_policy_names_are_reexported_by_discovery():
    for name in ("ENV_ALLOW", "ENV_DENY", "ENV_DISABLE_AUTOLOAD", "effective_lists", "is_listed"):
        assert getattr(discovery, name) is getattr(policy, name), name


def test_reading_names_are_reexported_by_config():
    for name in ("active", "PluginConfig", "RequiredPlugin", "Layer", "parse_requirement_list", "parse_table",
                 "merge", "ENV_DEFAULTS", "ENV_CONFIG", "ENV_REQUIRE", "CONFIG_FILE", "CONFIG_ENTRY_POINT_GROUP"):
        assert getattr(config, name) is getattr(settings, name), name


def test_precision_aliases_live_in_the_registry():
    assert connector.PRECISION_ALIASES is registry.PRECISION_ALIASES
    assert registry.canonical_precision("bf16") == "bf16-mixed"
    assert registry.canonical_precision("32-true") == "32-true"
