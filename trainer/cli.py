"""`shopguide train`, `eval`, `export` and `bench model`: the model's life from data to serving files.

`export` and `bench model` (export.py, bench_model.py) sit beside the checkpoint they read.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from shopguide.args import add_home_flag
from shopguide.errors import UserError
from shopguide.extras import needs

EVAL_HELP = """Rank each user's held-out item against ALL items (leave-one-out: the last item is the
test target, the one before it the validation target) and report HR and NDCG at 5, 10, 20 for
the model and a popularity baseline. Items the user has already seen stay in the ranking, scored
by the model as it scores them when serving (with its seen-item bias). Writes report.md
and report.png."""


def register(commands, bench):
    from trainer.config import TrainConfig

    train = commands.add_parser(
        "train", help="train the next-item model on a data set",
        description="Train the next-item Transformer (full-catalogue cross-entropy) with early stopping "
                    "on validation NDCG@20; writes OUT/checkpoint.pt (weights, model args, config, item "
                    "index, history) at every improvement.")
    train.add_argument("--data", type=Path, required=True,
                       help="Amazon sequences, Diginetica views or user,item,timestamp CSV")
    train.add_argument("--out", type=Path, required=True, help="directory for checkpoint.pt")
    for f in dataclasses.fields(TrainConfig):
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(f.default, bool) else \
            {"type": type(f.default), "metavar": f.name.upper()}
        train.add_argument("--" + f.name.replace("_", "-"), dest=f"config_{f.name}", default=f.default,
                           help=f"{f.metadata['doc']} (default {f.default})", **kind)
    train.set_defaults(handler=_train)
    needs(train, "train")

    evaluate = commands.add_parser("eval", help="full-ranking evaluation with a report",
                                   description=EVAL_HELP)
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint.pt from `shopguide train`")
    evaluate.add_argument("--data", type=Path, help="data file (default: the one the checkpoint was trained on)")
    evaluate.add_argument("--out", type=Path, help="report directory (default: CHECKPOINT_DIR/report)")
    evaluate.set_defaults(handler=_eval)
    needs(evaluate, "train")

    export = commands.add_parser(
        "export", help="write the ONNX serving files of a checkpoint",
        description="Write model.onnx (fp32, ONNX Runtime graph-optimised, top-k inside the graph), "
                    "model.int8.onnx (dynamic int8 quantisation), item_index.json and export.json; with a text tower "
                    "also tokenizer.json and history.onnx (and its int8 twin), the graph for rows without a query. "
                    "Tensor names and padding: serving/wire.py.")
    export.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint.pt from `shopguide train`")
    export.add_argument("--out", type=Path, required=True, help="directory for the serving files")
    export.add_argument("--top-k", type=int, default=20,
                        help="items returned per sequence: enough for the storefront's k after purchases are "
                             "removed; each one costs serialisation on every answer (default 20)")
    export.add_argument("--clusters", type=int,
                        help="score only the items of the best --probe of N clusters (approximate, for large "
                             "catalogues); 0 scores every item (default: 0 up to 200,000 items, ~4*sqrt(items) above)")
    export.add_argument("--probe", type=int, default=16, help="clusters whose items are ranked (default 16)")
    export.set_defaults(handler=_export)
    needs(export, "train")

    model = bench.add_parser(
        "model", help="torch eager vs ONNX Runtime fp32 and int8, batch 1 and 64",
        description="Requests/s and p50/p99 latency of the model plus top-k, one call at a time on real "
                    "histories, for torch eager and the ONNX Runtime fp32 and int8 exports (and torch on "
                    "a GPU when there is one). With --items: what the catalogue's size costs instead, with "
                    "random weights (training step, export, model size, latency exact and cluster-pruned, "
                    "peak memory per size).")
    model.add_argument("--items", type=int, nargs="+", metavar="N",
                       help="catalogue sizes to measure with random weights, e.g. 12000 100000 1000000")
    model.add_argument("--checkpoint", type=Path, help="checkpoint.pt (default HOME/models/toys/checkpoint.pt)")
    model.add_argument("--export", type=Path, help="export directory (default: beside the checkpoint, export/)")
    model.add_argument("--data", type=Path, help="histories to send (default: the checkpoint's data)")
    model.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="sequences per call (default 1 64)")
    model.add_argument("--seconds", type=float, default=5.0, help="duration per runtime and batch (default 5)")
    model.add_argument("--threads", type=int, default=2, help="CPU threads for every runtime (default 2)")
    model.add_argument("--out", type=Path, help="also write bench_model.json and bench_model.png here")
    add_home_flag(model)
    model.set_defaults(handler=_bench_model)
    needs(model, "train")

    search = bench.add_parser(
        "search", help="the hedged search answer's cost, and what the history graph saves calls without a query",
        description="p50 latency per call on ONNX Runtime of a tower version's two served graphs (the hedged "
        "one, for rows with a query; the history graph, for rows without) and of the searched graph without "
        "the hedge, for calls without queries and calls where every row searched (real histories, queries of "
        "2-3 words of each target's title), side by side in one run.")
    search.add_argument("--checkpoint", type=Path, help="checkpoint.pt trained with --catalogue "
                        "(default HOME/models/toys-text/checkpoint.pt)")
    search.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="sequences per call (default 1 8 32)")
    search.add_argument("--seconds", type=float, default=3.0, help="duration per graph, batch and kind (default 3)")
    search.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    add_home_flag(search)
    search.set_defaults(handler=_bench_search)
    needs(search, "train")


def _train(args: argparse.Namespace, settings) -> int:
    import time

    from trainer.train import TrainConfig, fit

    config = TrainConfig(**{k[len("config_"):]: v for k, v in vars(args).items() if k.startswith("config_")})
    if config.threads < 0:
        raise UserError("--threads must be positive, or 0 to pick the fastest count every epoch")
    started = time.monotonic()
    checkpoint = fit(args.data, config, out=args.out)
    minutes = (time.monotonic() - started) / 60
    test = checkpoint.metrics["test"]
    print(f"{len(checkpoint.history)} epochs in {minutes:.1f} min; test HR@20 {test['HR@20']:.4f} "
          f"NDCG@20 {test['NDCG@20']:.4f}; wrote {args.out / 'checkpoint.pt'}")
    return 0


def _eval(args: argparse.Namespace, settings) -> int:
    from trainer import report
    from trainer.checkpoint import Checkpoint
    from trainer.evaluate import evaluate_checkpoint
    from trainer.evaluate_search import content_sections

    checkpoint = Checkpoint.load(args.checkpoint)
    data = args.data or Path(checkpoint.data)
    results, facts = evaluate_checkpoint(checkpoint, data)
    results.update(report.references_for(data))
    sections = content_sections(checkpoint, data)
    path = report.write(args.out or args.checkpoint.parent / "report", results, checkpoint.history, facts, sections)
    for title, rows in {"": results, **sections}.items():
        if title:
            print(title)
        for name, metrics in rows.items():
            print(f"{name:<22} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"wrote {path}")
    return 0


def _export(args: argparse.Namespace, settings) -> int:
    from trainer.export import export

    if args.top_k < 1 or args.probe < 1 or (args.clusters is not None and args.clusters < 0):
        raise UserError("--top-k and --probe must be positive, --clusters 0 or more")
    out = export(args.checkpoint, args.out, top_k=args.top_k, clusters=args.clusters, probe=args.probe)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def _bench_catalogue(args: argparse.Namespace) -> int:
    from trainer.bench_catalogue import run

    if min(args.items) < 2 or args.seconds <= 0 or args.threads < 1:
        raise UserError("--items must be at least 2, --seconds and --threads positive")
    run(args.items, args.threads, args.seconds)
    return 0


def _bench_search(args: argparse.Namespace, settings) -> int:
    from trainer.bench_search import run

    checkpoint = args.checkpoint or settings.home / "models" / "toys-text" / "checkpoint.pt"
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no checkpoint here (shopguide train --catalogue ... --out {checkpoint.parent})")
    if min(args.batch) < 1 or args.seconds <= 0 or args.threads < 1:
        raise UserError("--batch, --seconds and --threads must be positive")
    run(checkpoint, args.batch, args.seconds, args.threads)
    return 0


def _bench_model(args: argparse.Namespace, settings) -> int:
    from trainer.bench_model import run

    if args.items:
        return _bench_catalogue(args)
    checkpoint = args.checkpoint or settings.home / "models" / "toys" / "checkpoint.pt"
    export_dir = args.export or checkpoint.parent / "export"
    if not (export_dir / "export.json").is_file():
        raise UserError(f"{export_dir}: no export here (shopguide export --checkpoint {checkpoint} --out {export_dir})")
    if min(args.batch) < 1 or args.seconds <= 0:
        raise UserError("--batch and --seconds must be positive")
    run(checkpoint, export_dir, args.data, args.batch, args.seconds, args.threads, args.out)
    return 0
