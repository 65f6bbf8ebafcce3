"""Exception and warning types, so users can catch fulmen's complaints apart from torch's."""


class FulmenError(Exception):
    """Base of every error fulmen raises on purpose."""


class FulmenConfigError(FulmenError, ValueError):
    """A setting, name or combination of settings cannot work; the message says which."""


class FulmenUserCodeError(FulmenError, TypeError):
    """The user's Module/DataModule/callback returned or did something fulmen cannot use."""


class FulmenPluginError(FulmenError):
    """A plugin the user asked for could not be loaded; carries the recorded reason."""


class FulmenCheckpointError(FulmenError):
    """A checkpoint file cannot be read or does not fit what is being restored."""


class FulmenWarning(UserWarning):
    """Base of fulmen's warnings."""


class FulmenPluginWarning(FulmenWarning):
    """A plugin failed, is incompatible, or collided with another; training goes on."""
