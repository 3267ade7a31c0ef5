"""User-facing errors: raised at the boundary (grid files, CLI, config.json), never inside jit."""


class SweepError(ValueError):
    """A problem with what the user gave us; its message names the file, key and allowed values.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """
