"""Exception and warning types, so users can catch fulmen's complaints apart from torch's."""


class FulmenError(Exception):
    """Base of every error fulmen raises on purpose; catch it to tell fulmen's complaints
    apart from errors raised by torch or by your own code."""


class FulmenConfigError(FulmenError, ValueError):
    """A setting, name or combination of settings cannot work (an unknown strategy name,
    ``devices`` the machine does not have); the message says which and what to use. Also a
    ``ValueError``, so code written for plain Python errors still catches it."""


class FulmenUserCodeError(FulmenError, TypeError):
    """The user's Module, DataModule or callback returned or did something fulmen cannot use
    (a ``training_step`` without a loss, a metric logged under no name); also a ``TypeError``."""


class FulmenPluginError(FulmenError):
    """A plugin the user asked for by name (``strategy="acme"``, ``plugins=["acme"]``) could
    not be loaded; the message is the reason discovery recorded (the import error, the
    version mismatch). Plugins nobody asked for only warn."""


class FulmenCheckpointError(FulmenError):
    """A checkpoint cannot be read (truncated, corrupted, holding objects that are not plain
    data) or does not fit what is being restored (another optimizer setup, a weights-only
    file passed to resume); the message names the file and the way out."""


class FulmenWarning(UserWarning):
    """Base of fulmen's warnings, for filtering them as a group
    (``warnings.filterwarnings("ignore", category=FulmenWarning)``)."""


class FulmenPluginWarning(FulmenWarning):
    """A plugin failed, is incompatible, or collided with another; training goes on."""


class FulmenDeprecationWarning(FulmenWarning, DeprecationWarning):
    """Something still works but will go; ``fulmen.utilities.rank_zero_deprecation`` warns
    with it (Lightning's ``LightningDeprecationWarning``). A ``DeprecationWarning`` too, so
    Python's default filters treat it as one."""
