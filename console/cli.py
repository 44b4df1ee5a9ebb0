"""The `shopguide` command: one subcommand per job.

Each package registers its own subcommands (streams: broker, worker, replay, catalog; serving: triton,
model; trainer: train, eval, export, finetune, new-items); `bench` gathers the benchmarks. A handler is
`handler(args, settings) -> int | None`; one that needs an optional install is marked with
`shopguide.extras.needs` and is not run without it. Flags whose `dest` is a Settings field override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from shopguide.args import Parser
from shopguide.config import Settings, describe
from shopguide.errors import UserError
from shopguide.extras import unmet


def build_parser() -> Parser:
    from console.bench_e2e import register as register_bench_e2e
    from console.chaos import register as register_chaos
    from console.demo import register as register_demo
    from serving.cli import register as register_serving
    from streams.catalog_cli import register as register_catalog
    from streams.cli import register as register_streams
    from trainer.cli import register as register_trainer
    from trainer.finetune_cli import register as register_finetune
    from trainer.new_items_cli import register as register_new_items

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
    register_catalog(commands)
    register_new_items(commands)
    register_demo(commands)
    register_chaos(commands)
    register_bench_e2e(bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if needs := unmet(args):
        print(needs, file=sys.stderr)
        return 1
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
