class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, unreachable broker): printed as one line."""
