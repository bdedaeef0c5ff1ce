"""User-facing errors: raised for bad input, printed by the CLIs as one line with a non-zero exit."""


class DimError(Exception):
    """A problem the user can fix (bad path, bad config value, wrong data). Message = one line."""
