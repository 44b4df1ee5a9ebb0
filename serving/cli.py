"""Subcommands of the serving package: `triton`, `model`, and `bench triton`."""
from __future__ import annotations

import argparse

from shopguide.args import add_home_flag, path_arg
from shopguide.errors import UserError
from shopguide.extras import needs


def register(commands, bench):
    _register_triton(commands)
    _register_model(commands)
    _register_bench(bench)


def add_triton_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grpc", dest="triton_grpc", metavar="HOST:PORT",
                        help="Triton gRPC endpoint (env SHOPGUIDE_TRITON_GRPC, default 127.0.0.1:8001)")
    parser.add_argument("--model-name", dest="model_name",
                        help="model name in the repository (env SHOPGUIDE_MODEL_NAME, default next_item)")


def add_repository_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", dest="model_repository", type=path_arg, metavar="DIR",
                        help="Triton model repository (env SHOPGUIDE_MODEL_REPOSITORY, default ./model_repository)")


def _register_triton(commands) -> None:
    triton = commands.add_parser("triton", help="the local Triton server (from the nvidia-pytriton wheel)",
                                 description="Run NVIDIA Triton in the background on the model repository, "
                                             "with its pid file and log under <home>/triton.")
    actions = triton.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    start = actions.add_parser("start", help="start Triton and wait until it (and the model, if any) is ready")
    start.add_argument("--http", dest="triton_http", metavar="HOST:PORT",
                       help="Triton HTTP endpoint (env SHOPGUIDE_TRITON_HTTP, default 127.0.0.1:8000)")
    start.add_argument("--metrics-port", dest="triton_metrics_port", type=int,
                       help="Prometheus metrics port (env SHOPGUIDE_TRITON_METRICS_PORT, default 8002)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    start.set_defaults(handler=_triton_start)
    needs(start, "local")
    stop = actions.add_parser("stop", help="stop Triton, letting in-flight requests finish")
    stop.set_defaults(handler=_triton_stop)
    status = actions.add_parser("status", help="is Triton running, and which model version serves")
    status.set_defaults(handler=_triton_status)
    for parser in (start, stop, status):
        add_home_flag(parser)
        add_repository_flag(parser)
        add_triton_flags(parser)


def _register_model(commands) -> None:
    model = commands.add_parser("model", help="model versions in the Triton repository: list, publish, rollback",
                                description="Versions live in <repository>/<model>/<N>/; Triton serves the "
                                            "newest, and a running Triton swaps to it without downtime.")
    actions = model.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="versions on disk and the one Triton serves")
    listing.set_defaults(handler=_model_list)
    publish = actions.add_parser("publish", help="add an export as the newest version and load it")
    publish.add_argument("export_dir", type=_existing_dir, help="a directory written by `shopguide export`")
    publish.add_argument("--int8", action="store_true", help="serve the int8-quantised model.int8.onnx")
    publish.add_argument("--keep", dest="model_keep", type=int,
                         help="versions to keep (env SHOPGUIDE_MODEL_KEEP, default 3)")
    publish.set_defaults(handler=_model_publish)
    rollback = actions.add_parser("rollback", help="retire the newest version so the previous one serves again")
    rollback.set_defaults(handler=_model_rollback)
    for parser in (listing, publish, rollback):
        add_repository_flag(parser)
        add_triton_flags(parser)


def _register_bench(bench) -> None:
    parser = bench.add_parser("triton", help="requests/s of the async client against a running Triton",
                              description="Sends micro-batches of random sessions from the served version's "
                                          "items through the async gRPC client, several calls in flight.")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256], help="users per call (default 32 256)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration per batch size (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight (default 4)")
    parser.add_argument("--session-length", dest="session_length", type=int,
                        help="longest random session, items (env SHOPGUIDE_SESSION_LENGTH, default 50)")
    add_repository_flag(parser)
    add_triton_flags(parser)
    parser.set_defaults(handler=_bench_triton)


def _existing_dir(text: str):
    path = path_arg(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a directory")
    return path


def _triton_start(args, settings) -> int:
    from serving.triton import LocalTriton

    triton = LocalTriton(settings)
    pid = triton.start(timeout_s=args.timeout)
    _print_state(settings)
    print(f"pid {pid}; log {triton.log_file}; metrics http://{settings.triton_grpc.rpartition(':')[0]}:"
          f"{settings.triton_metrics_port}/metrics")
    return 0


def _triton_stop(args, settings) -> int:
    from serving.triton import LocalTriton

    print("stopped" if LocalTriton(settings).stop() else "Triton was not running")
    return 0


def _triton_status(args, settings) -> int:
    from serving.triton import LocalTriton

    pid = LocalTriton(settings).pid()
    print(f"local Triton: {'pid ' + str(pid) if pid else 'not started from ' + str(settings.home)}")
    return 0 if _print_state(settings) else 1


def _print_state(settings) -> bool:
    """Print what the server at the gRPC endpoint serves; True if the model answers."""
    from serving.client import server_state

    state = server_state(settings.triton_grpc, settings.model_name)
    if not state.live:
        print(f"Triton at {settings.triton_grpc}: not reachable")
        return False
    if not state.serving:
        print(f"Triton at {settings.triton_grpc}: up, but no version of {settings.model_name} is loaded "
              f"(publish one: shopguide model publish EXPORT_DIR)")
        return False
    print(f"Triton at {settings.triton_grpc}: {settings.model_name} version {state.serving[-1]} serving")
    return True


def _model_list(args, settings) -> int:
    from serving.client import server_state
    from serving.repository import ModelRepository, export_meta

    repository = ModelRepository.from_settings(settings)
    serving = server_state(settings.triton_grpc, settings.model_name).serving
    if not repository.versions():
        print(f"no versions in {repository.model_dir}")
    verified = repository.verified()
    for version in repository.versions():
        meta = export_meta(repository.model_dir / str(version))
        mark = ", verified" if version in verified else ""
        mark += "  <- Triton serves this" if version in serving else ""
        print(f"{version:>5}  {meta.get('num_items', '?')} items, top {meta.get('top_k')}, "
              f"max_len {meta.get('max_len')}{mark}")
    if repository.retired():
        print(f"retired (rolled back or failed to load): {', '.join(map(str, repository.retired()))}")
    return 0


def _model_publish(args, settings) -> int:
    from serving.rollout import publish

    version, serving = publish(settings, args.export_dir, int8=args.int8)
    print(f"published {settings.model_name} version {version}")
    _print_serving(settings, serving)
    return 0


def _model_rollback(args, settings) -> int:
    from serving.rollout import rollback

    version, serving = rollback(settings)
    print(f"{settings.model_name}: version {version} is the newest again")
    _print_serving(settings, serving)
    return 0


def _print_serving(settings, serving) -> None:
    if serving is None:
        print(f"Triton at {settings.triton_grpc} is not running; it loads the newest version when started")
    else:
        print(f"Triton at {settings.triton_grpc} now serves version {serving}")


def _bench_triton(args, settings) -> int:
    from serving.bench_triton import run

    if args.concurrency < 1 or min(args.batch) < 1:
        raise UserError("--batch and --concurrency must be positive")
    run(settings, args.batch, args.seconds, args.concurrency)
    return 0
