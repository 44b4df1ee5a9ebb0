"""`shopguide finetune` and `shopguide bench online` (registered from console/cli.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from shopguide.args import add_home_flag, add_kafka_flags
from shopguide.errors import UserError
from shopguide.extras import needs

FINETUNE_HELP = """Read the events since the last run from Kafka (at most --max-events, up to where the workers
have folded them into sessions; each user's history from the session changelog), grow the item
index for items never seen, fine-tune the live model version within --max-minutes, rank each
held-out user's last new event against all items with the candidate and with the live model, and
publish the candidate (export, Triton probes it, new repository version, Triton loads it while
the old version keeps serving) only if its NDCG@20 is not worse. Each run is appended to
HOME/finetune/runs.jsonl, which holds the position: a published or rejected run moves it past
its events, exactly once even when a run is killed. Metrics on --metrics-port."""

ONLINE_HELP = """Replay a data set in time order: train on the first --train-fraction of time, then for
each later event recommend for that user (the list the pipeline would push) and score it against
the user's next event (online HR@10, HR@20). Arms: popularity (counts updated online), the static
model, and the static model fine-tuned every --every events through the same step as
`shopguide finetune`. Inference runs in-process with ONNX Runtime on the exported model.onnx (the
file Triton serves). Writes online.md and online.png."""


def register(commands, bench):
    from serving.cli import add_repository_flag, add_triton_flags
    from trainer.finetune_config import MAX_EVENTS

    finetune = commands.add_parser("finetune", help="fine-tune the live model on new events; publish if not worse",
                                   description=FINETUNE_HELP)
    finetune.add_argument("--every", help="run again after N new events (500) or every duration (30s, 10m, 2h); "
                                          "default: run once")
    finetune.add_argument("--runs", type=int, help="with --every: stop after this many runs (default: never)")
    finetune.add_argument("--group", default="shopguide-finetune",
                          help="Kafka consumer group mirroring the position, for lag monitors (default shopguide-finetune)")
    finetune.add_argument("--max-events", type=int, default=MAX_EVENTS,
                          help=f"records read per run at most; a backlog takes several runs (default {MAX_EVENTS:,})")
    limit = finetune.add_mutually_exclusive_group()
    limit.add_argument("--max-minutes", type=float, default=5.0, help="training time per run (default 5)")
    limit.add_argument("--max-seconds", type=float, help="training time per run, in seconds")
    _add_config_flags(finetune)
    finetune.add_argument("--int8", action="store_true", help="publish the int8-quantised model")
    finetune.add_argument("--keep", dest="model_keep", type=int,
                          help="versions kept in the repository (env SHOPGUIDE_MODEL_KEEP, default 3)")
    finetune.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (default: off)")
    finetune.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_kafka_flags(finetune)
    add_home_flag(finetune)
    add_repository_flag(finetune)
    add_triton_flags(finetune)
    finetune.set_defaults(handler=_finetune)
    needs(finetune, "train")

    online = bench.add_parser("online", help="online hit rate over a time-ordered replay: popularity, static, fine-tuned",
                              description=ONLINE_HELP)
    online.add_argument("--data", type=Path, help="data file (default: the Diginetica sample under the data dir)")
    online.add_argument("--train-fraction", type=float, default=0.7, help="share of time to train on (default 0.7)")
    online.add_argument("--every", type=int, default=1000, help="fine-tune after this many events (default 1000)")
    online.add_argument("--train-minutes", type=float, default=5.0, help="initial training time (default 5)")
    online.add_argument("--finetune-seconds", type=float, default=60.0, help="training time per fine-tune (default 60)")
    _add_config_flags(online)
    online.add_argument("--batch", type=int, default=64, help="recommendations per inference call, as the "
                                                              "worker's micro-batches (default 64)")
    online.add_argument("--threads", type=int, default=2, help="CPU threads for torch and ONNX Runtime (default 2)")
    online.add_argument("--out", type=Path, help="report directory: online.md, online.png, online.json (default "
                                                 "HOME/bench/online; the README's is docs/bench-online); the "
                                                 "models and training file go to HOME/bench/online")
    add_home_flag(online)
    online.set_defaults(handler=_bench_online)
    needs(online, "train")


def _add_config_flags(parser) -> None:
    from trainer.finetune_config import FinetuneConfig

    defaults = FinetuneConfig()
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"learning rate (default {defaults.lr})")
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs,
                        help=f"epochs over the new events at most (default {defaults.max_epochs})")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help=f"epochs without a better validation NDCG@20 before stopping (default {defaults.patience})")
    parser.add_argument("--min-gain", type=float, default=defaults.min_gain,
                        help="publish when candidate NDCG@20 >= live NDCG@20 + this (default 0: not worse)")
    parser.add_argument("--min-users", type=int, default=defaults.min_users,
                        help=f"held-out users needed to decide; fewer: skip, offsets stay (default {defaults.min_users})")
    parser.add_argument("--rehearsal", type=float, default=defaults.rehearsal,
                        help="old users' histories trained on beside the new events, per new user "
                             f"(default {defaults.rehearsal})")
    parser.add_argument("--holdout", type=float, default=defaults.holdout,
                        help="share of the newest users held out of training for the gate "
                             f"(default {defaults.holdout})")


def _finetune(args: argparse.Namespace, settings) -> int:
    from trainer.finetune_config import parse_every
    from trainer.job import FinetuneJob, JobOptions

    try:
        every = parse_every(args.every)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    minutes = args.max_seconds / 60.0 if args.max_seconds is not None else args.max_minutes
    if minutes <= 0 or args.min_users < 1 or args.max_events < 1 or (args.runs is not None and args.runs < 1):
        raise UserError("--max-minutes/--max-seconds, --min-users, --max-events and --runs must be positive")
    config = _config(args, minutes)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = JobOptions(args.group, config, every, args.runs, args.int8, max_events=args.max_events)
    job = FinetuneJob(settings, options, _metrics(args.metrics_port))
    try:
        records = job.run()
    finally:
        job.close()
    return 1 if records and records[-1].outcome == "failed" else 0


def _config(args, minutes: float):
    from trainer.finetune_config import FinetuneConfig

    if not 0 < args.holdout < 1:
        raise UserError("--holdout must be in (0, 1)")
    return FinetuneConfig(lr=args.lr, max_epochs=args.max_epochs, patience=args.patience, max_minutes=minutes,
                          min_gain=args.min_gain, min_users=args.min_users, rehearsal=args.rehearsal,
                          holdout=args.holdout)


def _metrics(port: int | None):
    if port is None:
        return None
    from prometheus_client import CollectorRegistry, start_http_server

    from shopguide.metrics import FinetuneMetrics

    metrics = FinetuneMetrics(CollectorRegistry())
    start_http_server(port, registry=metrics.registry)
    return metrics


def _bench_online(args: argparse.Namespace, settings) -> int:
    from trainer.bench_online import OnlineBench

    data = args.data or _data_dir(settings) / "diginetica-sample" / "train-item-views.csv"
    if not 0 < args.train_fraction < 1 or args.every < 1 or args.batch < 1:
        raise UserError("--train-fraction must be in (0, 1); --every and --batch positive")
    work = Path(settings.home) / "bench" / "online"
    bench = OnlineBench(data, args.train_fraction, args.every, args.train_minutes,
                        _config(args, args.finetune_seconds / 60.0), args.batch, args.threads)
    path = bench.run(args.out or work, work)
    print(f"wrote {path}")
    return 0


def _data_dir(settings) -> Path:
    root = Path(__file__).resolve().parent.parent
    return settings.data_dir if settings.data_dir.is_absolute() else root / settings.data_dir
