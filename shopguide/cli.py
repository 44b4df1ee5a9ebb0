"""The `shopguide` command: one subcommand per job.

Each package registers its own subcommands (streams: broker, worker, replay; serving: triton,
export, model; trainer: train, eval, finetune); `bench` gathers the benchmarks. A handler is
`handler(args, settings) -> int | None`. Flags whose `dest` is a Settings field override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from shopguide.config import Settings, describe
from shopguide.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", dest="bootstrap_servers",
                        help="Kafka bootstrap servers (env SHOPGUIDE_BOOTSTRAP_SERVERS, default 127.0.0.1:9092)")


def add_home_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", dest="home", type=path_arg,
                        help="run-time state directory (env SHOPGUIDE_HOME, default ./var)")


def path_arg(text: str):
    """argparse type: a path, `~` expanded."""
    from pathlib import Path

    return Path(text).expanduser()


def existing_path(text: str):
    """argparse type: a path that must exist."""
    path = path_arg(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return path


def build_parser() -> Parser:
    from shopguide.bench_e2e import register as register_bench_e2e
    from shopguide.demo import register as register_demo
    from serving.cli import register as register_serving
    from streams.cli import register as register_streams
    from trainer.cli import register as register_trainer
    from trainer.finetune_cli import register as register_finetune

    parser = Parser(prog="shopguide", description=__doc__.splitlines()[0],
                    epilog="environment variables:\n" + describe(),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    bench_parser = commands.add_parser("bench", help="benchmarks that print their figures")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCH", parser_class=Parser)
    bench.required = True
    for register in (register_streams, register_serving, register_trainer, register_finetune):
        register(commands, bench)
    register_demo(commands)
    register_bench_e2e(bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(Settings)}
    try:
        settings = Settings.from_env(**{k: v for k, v in vars(args).items() if k in fields})
        return args.handler(args, settings) or 0
    except UserError as exc:
        print(f"shopguide {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shopguide {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
