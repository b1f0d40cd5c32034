"""The one exception type users see: its message says what is wrong and where."""


class DreamflowError(Exception):
    """An error caused by the user's input or setup, reported as one line without a traceback."""
