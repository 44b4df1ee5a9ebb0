"""Subcommands of the streams package: broker, worker, replay, bench stream, bench startup."""
from __future__ import annotations

import argparse

from shopguide.args import add_home_flag, add_kafka_flags, existing_path, path_arg
from shopguide.errors import UserError


def register(commands, bench):
    _register_broker(commands)
    _register_worker(commands)
    _register_replay(commands)
    _register_bench(bench)
    _register_bench_state(bench)


def _register_bench_state(bench) -> None:
    state = bench.add_parser(
        "state", help="memory per session and changelog recovery time for N users",
        description="Fill a session changelog with --users sessions, start a worker on it, and print "
                    "the packed record size, the seconds from launch to holding every session, and the "
                    "worker's memory beside an empty worker's. Starts its own broker unless "
                    "--bootstrap-servers is given.")
    state.add_argument("--users", type=_positive, default=100_000, help="sessions to recover (default 100000)")
    state.add_argument("--bootstrap-servers", dest="bench_bootstrap", metavar="HOST:PORT",
                       help="use this broker instead of starting one")
    state.set_defaults(handler=_bench_state)


def _bench_state(args, settings) -> int:
    import dataclasses

    from streams.bench_state import report, run_state_bench

    if args.bench_bootstrap:
        settings = dataclasses.replace(settings, bootstrap_servers=args.bench_bootstrap)
    print(report(run_state_bench(settings, args.users, bool(args.bench_bootstrap))))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _register_bench(bench) -> None:
    stream = bench.add_parser(
        "stream", help="events/s of a bare Faust pass-through agent vs the session agent",
        description="Produce the same synthetic events once, then run (a) the fastest Faust pass-through "
                    "agent and (b) the session worker over them, one after the other, and print events/s "
                    "of each and their ratio. Starts its own broker on free ports unless "
                    "--bootstrap-servers is given.")
    stream.add_argument("--events", type=int, default=200_000, help="events to push through (default 200000)")
    stream.add_argument("--profile", type=path_arg, metavar="DIR",
                        help="run both under cProfile, write DIR/{passthrough,sessions}.prof, print the top")
    stream.add_argument("--bootstrap-servers", dest="bench_bootstrap", metavar="HOST:PORT",
                        help="use this broker instead of starting one")
    stream.set_defaults(handler=_bench_stream)

    startup = bench.add_parser(
        "startup", help="seconds from launching `shopguide worker` to /metrics answering and the first event consumed",
        description="Launch the worker --runs times, each under a new consumer group on topics holding one "
                    "click, and print the median seconds from the launch to /metrics answering and to the "
                    "click consumed. Starts its own broker unless --bootstrap-servers is given.")
    startup.add_argument("--runs", type=int, default=5, help="worker launches (default 5)")
    startup.add_argument("--shopguide", metavar="PATH",
                         help="the `shopguide` command of another install to launch (default: this one's)")
    startup.add_argument("--bootstrap-servers", dest="bench_bootstrap", metavar="HOST:PORT",
                         help="use this broker instead of starting one")
    startup.set_defaults(handler=_bench_startup)


def _bench_startup(args, settings) -> int:
    import dataclasses

    from streams.bench_startup import line, median, run_startup_bench

    if args.runs < 1:
        raise UserError("--runs must be positive")
    if args.bench_bootstrap:
        settings = dataclasses.replace(settings, bootstrap_servers=args.bench_bootstrap)
    results = run_startup_bench(settings, args.runs, args.shopguide, bool(args.bench_bootstrap))
    for n, result in enumerate(results, start=1):
        print(f"  run {n}: {line(result)}")
    print(f"median of {len(results)}: {line(median(results))}")
    return 0


def _bench_stream(args, settings) -> int:
    import dataclasses

    from streams.bench_stream import print_profiles, run_stream_bench

    if args.bench_bootstrap:
        settings = dataclasses.replace(settings, bootstrap_servers=args.bench_bootstrap)
    rates = run_stream_bench(settings, args.events, bool(args.bench_bootstrap), args.profile)
    ratio = rates["sessions"] / rates["passthrough"]
    print(f"(a) pass-through {rates['passthrough']:,.0f} events/s   (b) sessions {rates['sessions']:,.0f} events/s"
          f"   ratio (b)/(a) {ratio:.2f}")
    if args.profile:
        print_profiles(args.profile)
    return 0


def _register_replay(commands) -> None:
    replay = commands.add_parser(
        "replay", help="produce a data set's interactions as events (kafka-python, with progress)",
        description="Send a data set's interactions, in time order, as schema-v1 events keyed by user: "
                    "Diginetica views (train-item-views.csv) as clicks with their real times, Amazon "
                    "sequences as purchases interleaved across users, or a CSV user,item,timestamp[,type].")
    replay.add_argument("--data", required=True, type=existing_path, help="the data file")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    pace.add_argument("--speedup", type=float,
                      help="replay at this many times the data's real pace (Diginetica, timestamped CSV)")
    replay.add_argument("--limit", type=int, help="send only the first N interactions")
    add_kafka_flags(replay)
    replay.set_defaults(handler=_replay)


def _replay(args, settings) -> int:
    from streams.replay import replay

    sent = replay(settings, args.data, rate=args.rate, speedup=args.speedup, limit=args.limit)
    print(f"sent {sent} events to {settings.bootstrap_servers}")
    return 0


def _register_worker(commands) -> None:
    worker = commands.add_parser(
        "worker", help="run a Faust worker: session table, dead letters, recommendations, /metrics",
        description="Consume the event topics, keep each user's session in the changelog-backed table "
                    "user_sessions, send rejected events to the dead-letter topic, push one recommendation per "
                    "accepted event to the recommendations topic (Triton, or popularity when it can't answer; never "
                    "an item the catalogue topic marks out of stock or delisted), and serve Prometheus "
                    "metrics on http://<host>:<worker-port>/metrics. Start one per core or host; "
                    "partitions are shared among workers with the same --app-id.")
    add_kafka_flags(worker)
    add_home_flag(worker)
    worker.add_argument("--worker-port", dest="worker_port", type=int,
                        help="web port serving /metrics (env SHOPGUIDE_WORKER_PORT, default 6066)")
    worker.add_argument("--app-id", dest="worker_id",
                        help="Faust app id: consumer group and changelog prefix (env SHOPGUIDE_APP_ID)")
    worker.add_argument("--no-recommendations", dest="recommend", action="store_false",
                        help="keep sessions only; push no recommendations (no Triton needed)")
    worker.add_argument("--triton-grpc", dest="triton_grpc",
                        help="Triton gRPC endpoint (env SHOPGUIDE_TRITON_GRPC, default 127.0.0.1:8001)")
    worker.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"],
                        help="worker log level (default warning)")
    worker.set_defaults(handler=_worker)


def _worker(args, settings) -> int:
    from streams.app import create_app, run_worker

    return run_worker(create_app(settings, recommend=args.recommend), settings, args.loglevel)


def _register_broker(commands) -> None:
    broker = commands.add_parser(
        "broker", help="the local Kafka broker (KRaft, official jars): fetch, start, stop, status",
        description="Run Apache Kafka in KRaft mode on 127.0.0.1 from the official jars. Its data, "
                    "log and pid file live under <home>/kafka; a stop and start keeps every topic.")
    actions = broker.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser("fetch", help="download the Kafka jars into the cache (once; quick when cached)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=_broker_fetch)
    start = actions.add_parser("start", help="format storage if new, start in the background, wait until ready")
    stop = actions.add_parser("stop", help="graceful shutdown (data kept)")
    status = actions.add_parser("status", help="running or not; exit code 0 if running, 3 if not")
    for parser, handler in ((start, _broker_start), (stop, _broker_stop), (status, _broker_status)):
        add_home_flag(parser)
        parser.set_defaults(handler=handler)
    add_kafka_flags(start)
    start.add_argument("--port", type=int,
                       help="client port (default: the port of --bootstrap-servers, 9092)")
    start.add_argument("--controller-port", type=int, help="KRaft controller port (default: port + 1)")
    start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)")


def _broker(args: argparse.Namespace, settings):
    from streams.broker import LocalBroker, parse_port

    port = getattr(args, "port", None) or parse_port(settings.bootstrap_servers)
    controller_port = getattr(args, "controller_port", None) or port + 1
    return LocalBroker(settings.home, settings.cache, port, controller_port, settings.partitions)


def _broker_fetch(args, settings) -> int:
    from streams.broker import fetch

    libs = fetch(settings.cache, quiet=args.quiet)
    if not args.quiet:
        print(f"Kafka jars in {libs}")
    return 0


def _broker_start(args, settings) -> int:
    broker = _broker(args, settings)
    broker.start(timeout_s=args.timeout)
    print(f"broker ready on {broker.bootstrap_servers} (pid {broker.pid()}, data {broker.root / 'data'})")
    return 0


def _broker_stop(args, settings) -> int:
    broker = _broker(args, settings)
    print("broker stopped" if broker.stop() else f"no broker running from {broker.root}")
    return 0


def _broker_status(args, settings) -> int:
    broker = _broker(args, settings)
    pid = broker.pid()
    if pid is None:
        print(f"no broker running from {broker.root}")
        return 3
    print(f"broker running: pid {pid}, 127.0.0.1:{broker.running_port()}, data {broker.root / 'data'}")
    return 0
