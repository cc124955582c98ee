"""One exception type for everything a user can fix; the CLI prints it as one line."""


class DlbenchError(Exception):
    """A problem the user can act on. The message names the file/field and what to do."""

    exit_code = 2
