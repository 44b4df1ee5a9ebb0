"""The top layer: the `shopguide` command, the local stack, the demo and the end-to-end benchmark."""
