def register(commands, bench):
    """Add this package's subcommands (filled in as the package grows)."""
