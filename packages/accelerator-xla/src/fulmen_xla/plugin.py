"""Entry point of fulmen-accelerator-xla in the ``fulmen.plugins`` group.

fulmen imports this module at the first Trainer/Fabric, after checking this distribution's
requirement on ``fulmen``. It must stay import-light: backend libraries are imported
inside factories, when a user asks for one of this package's names (xla).
No names are registered yet: the backend is being built (see the project's issues), and an
installed but empty plugin is reported as such by ``fulmen plugins`` and by the error
for an unknown name, rather than failing later inside a half-made strategy.
"""
