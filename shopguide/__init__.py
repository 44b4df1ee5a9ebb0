"""shopguide: command line, settings and data-set readers shared by streams, serving and trainer."""
