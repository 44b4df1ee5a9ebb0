"""`shopguide new-items` (registered from console/cli.py)."""
from __future__ import annotations

import argparse

from shopguide.args import add_kafka_flags, existing_path
from shopguide.errors import UserError
from shopguide.extras import needs

HELP = """Follow the catalogue topic from its beginning and keep every listed item recommendable: when
items arrive that the live model version does not know, gather them for --batch-seconds, compute
their vectors from their content (title, categories, brand) with the text tower of the checkpoint
the version was exported from, and publish a version derived from the live one (the same graph,
hard-linked, plus the added items and their vectors) through the normal rollout: Triton probes it,
then swaps it in while the old version serves. No fine-tune and no new export: an item is served
within a minute of its record. Runs until stopped; a restart adds only what the live version lacks.
Needs a model trained with a catalogue (a text tower) and a running Triton."""


def register(commands) -> None:
    from serving.cli import add_repository_flag, add_triton_flags
    from trainer.new_items import BATCH_S

    parser = commands.add_parser("new-items", help="serve items new in the catalogue from their content, within a minute",
                                 description=HELP)
    parser.add_argument("--checkpoint", type=existing_path,
                        help="the checkpoint the live version was exported from (default: the version's checkpoint.pt, "
                             "else the source its export.json names)")
    parser.add_argument("--batch-seconds", type=float, default=BATCH_S,
                        help=f"items arriving this soon after the first share its publish (default {BATCH_S:g})")
    parser.add_argument("--topic", dest="topic_catalog",
                        help="the catalogue topic (env SHOPGUIDE_TOPIC_CATALOG, default shop.catalog)")
    parser.add_argument("--keep", dest="model_keep", type=int,
                        help="versions kept in the repository (env SHOPGUIDE_MODEL_KEEP, default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while the catalogue is read")
    add_kafka_flags(parser)
    add_repository_flag(parser)
    add_triton_flags(parser)
    parser.set_defaults(handler=_run)
    needs(parser, "train")


def _run(args: argparse.Namespace, settings) -> int:
    from trainer.new_items import NewItems

    if not 0 <= args.batch_seconds <= 600:
        raise UserError("--batch-seconds must be between 0 and 600")
    NewItems(settings, args.checkpoint, args.batch_seconds, progress=not args.quiet).run()
    return 0
