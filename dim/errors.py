"""User-facing errors: raised for bad input; the CLIs print them as one line, exit non-zero."""


class DimError(Exception):
    """A problem the user can fix (bad path, bad config value, wrong data). Message = one line."""
