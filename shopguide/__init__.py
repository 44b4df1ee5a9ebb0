"""shopguide base: settings, errors, metrics, child processes, data-set readers and shared CLI pieces.

The lowest layer: streams/, serving/ and trainer/ import it; it imports none of them."""
