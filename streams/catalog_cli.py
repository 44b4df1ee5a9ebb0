"""`shopguide catalog`: load the catalogue topic from a file, set one item's stock or listing."""
from __future__ import annotations

from shopguide.args import add_kafka_flags, existing_path


def register(commands) -> None:
    catalog = commands.add_parser(
        "catalog", help="the catalogue topic: load it from a file, mark an item in or out of stock or delisted",
        description="Workers never recommend an item the catalogue topic (compacted, key = item id) marks "
                    "out of stock or delisted; see README \"Catalogue\".")
    actions = catalog.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    load = actions.add_parser(
        "load", help="produce one record per item of a file (with progress)",
        description="Produce a schema-v1 record per row of FILE: the Toys items.tsv (item, asin, text, "
                    "attributes: the text is the title, the attribute ids the categories; all in stock), or "
                    "a CSV with a header of item,title and optionally categories (|-separated), brand, price, "
                    "in_stock (true/false, default true). Rows that fail the workers' checks are skipped and "
                    "counted by reason, with the first lines named; a file that cannot be read stops the load.")
    load.add_argument("--data", required=True, type=existing_path, help="the catalogue file")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    set_ = actions.add_parser(
        "set", help="mark one item in stock, out of stock or delisted",
        description="In or out of stock: send the item's newest record again with only in_stock changed (the "
                    "item must be in the topic). Delisted: send its tombstone; `catalog load` lists it again.")
    set_.add_argument("item", help="the item id")
    state = set_.add_mutually_exclusive_group(required=True)
    for name, meaning in (("in-stock", "can be recommended again"), ("out-of-stock", "never recommended meanwhile"),
                          ("delisted", "gone from the catalogue: never recommended")):
        state.add_argument(f"--{name}", dest="state", action="store_const", const=name.replace("-", "_"), help=meaning)
    for parser in (load, set_):
        add_kafka_flags(parser)
        parser.add_argument("--topic", dest="topic_catalog",
                            help="the catalogue topic (env SHOPGUIDE_TOPIC_CATALOG, default shop.catalog)")
    load.set_defaults(handler=_load)
    set_.set_defaults(handler=_set)


def _load(args, settings) -> int:
    from streams.catalog_load import load

    loaded = load(settings, args.data, progress=not args.quiet)
    print(f"sent {loaded.sent} items to {settings.topic_catalog} on {settings.bootstrap_servers}; {loaded.summary()}")
    return 0


def _set(args, settings) -> int:
    from streams.catalog_load import set_state

    set_state(settings, args.item, args.state)
    print(f"item {args.item}: {args.state.replace('_', ' ')} ({settings.topic_catalog})")
    return 0
