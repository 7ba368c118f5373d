"""``SettingsError`` on its own: commands that only read the ledger catch it without loading the
settings model (pydantic-settings), which costs more than such a command takes to answer."""


class SettingsError(Exception):
    """A required setting is missing or malformed; the message is one line naming it."""
