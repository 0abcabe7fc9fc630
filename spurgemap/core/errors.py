"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class SpurgemapError(Exception):
    """An error the user can fix; its message names the file and what to do."""

    exit_code = 2


class InputError(SpurgemapError):
    """Bad or unsupported input data, options or config."""
