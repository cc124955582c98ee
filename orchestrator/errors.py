"""One exception type for everything a user can fix; the CLI prints it as one line."""


class DlbenchError(Exception):
    """A problem the user can act on. The message names the file/field and what to do."""

    exit_code = 2


class EnvironmentUnavailable(DlbenchError):
    """This host cannot run an environment at all (a GPU architecture outside the image's
    kernels, a driver older than its CUDA needs): its runs' outcome is `unavailable`,
    final, not retried by --resume. Raised before anything is built."""
