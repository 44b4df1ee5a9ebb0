"""Command-line pieces every package's subcommands share: the parser class, common flags, path types."""
from __future__ import annotations

import argparse
from pathlib import Path

from shopguide.config import FIELDS, expected, parse
from shopguide.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus message. A flag whose
    `dest` is a Settings field is parsed and checked as that setting, so its error names the flag."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def add_argument(self, *args, **kwargs):
        if kwargs.get("dest") in FIELDS and kwargs.get("action", "store") == "store":
            kwargs["type"] = setting_type(kwargs["dest"])
        return super().add_argument(*args, **kwargs)


def setting_type(name: str):
    """argparse type: the text as Settings field `name`, checked like its environment variable."""
    field = FIELDS[name]

    def convert(text: str):
        try:
            value = parse(field, text)
        except UserError:
            value = None
        if value is None or not field.metadata["check"](value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected(field)}")
        return value
    convert.__name__ = name
    return convert


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", dest="bootstrap_servers",
                        help="Kafka bootstrap servers (env SHOPGUIDE_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)")


def add_home_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", dest="home", type=path_arg,
                        help="run-time state directory (env SHOPGUIDE_HOME, default ./var)")


def path_arg(text: str) -> Path:
    """argparse type: a path, `~` expanded."""
    return Path(text).expanduser()


def existing_path(text: str) -> Path:
    """argparse type: a path that must exist."""
    path = path_arg(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return path
