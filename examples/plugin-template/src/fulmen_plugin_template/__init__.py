"""fulmen-plugin-template: what a third-party fulmen plugin package looks like.

The classes live in their own modules and are imported only when a user asks for one of
their names; ``fulmen_plugin_template.plugin`` is the entry point fulmen imports at discovery.
"""

__version__ = "0.1.0"
