"""The one exception type users see: a problem with their input, stated in one line."""


class ValorlError(Exception):
    """Bad input or state a user can fix (missing file, wrong shapes, NaN data, unknown option).

    The CLI prints the message as a single line and exits with status 2; anything else is a bug
    and keeps its traceback.
    """
