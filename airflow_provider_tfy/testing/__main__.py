"""Run the gateway simulator in the foreground: ``python -m airflow_provider_tfy.testing``."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .jobs import KNOWN_STATUSES
from .simulator import GatewaySimulator

DEMO_JOBS: dict[str, tuple[str, ...]] = {
    "ftjob-demo-succeeded": ("queued", "running", "succeeded"),
    "ftjob-demo-failed": ("queued", "running", "failed"),
    "ftjob-demo-cancelled": ("queued", "cancelled"),
}


def _job_spec(text: str) -> tuple[str, tuple[str, ...]]:
    job_id, sep, statuses_text = text.partition("=")
    statuses = tuple(s.strip() for s in statuses_text.split(",") if s.strip())
    if not sep or not job_id or not statuses:
        raise argparse.ArgumentTypeError(f"expected ID=STATUS[,STATUS...], got {text!r}")
    unknown = [s for s in statuses if s not in KNOWN_STATUSES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown status(es) {unknown}; choose from {list(KNOWN_STATUSES)}")
    return job_id, statuses


def _statuses(text: str) -> tuple[str, ...]:
    statuses = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in statuses if s not in KNOWN_STATUSES]
    if not statuses or unknown:
        raise argparse.ArgumentTypeError(
            f"expected STATUS[,STATUS...] from {list(KNOWN_STATUSES)}, got {text!r}"
        )
    return statuses


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_tfy.testing",
        description="Serve a simulated TrueFoundry AI Gateway fine-tuning API until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--api-key", help="bearer key clients must send (default: a random tfy-sim-<hex>)")
    parser.add_argument(
        "--job",
        action="append",
        type=_job_spec,
        default=[],
        metavar="ID=STATUS,STATUS,...",
        help="script a job (repeatable); without any, three demo jobs are created",
    )
    parser.add_argument(
        "--create-statuses",
        type=_statuses,
        default=("queued", "running", "succeeded"),
        metavar="STATUS,STATUS,...",
        help="statuses of jobs created through POST /fine_tuning/jobs (default: queued,running,succeeded)",
    )
    parser.add_argument(
        "--no-cancel", action="store_true", help="answer 405 to cancel, as a gateway without cancel would"
    )
    parser.add_argument(
        "--ignore-list-filter", action="store_true", help="list jobs ignoring metadata[...] filters"
    )
    parser.add_argument("--polls-per-status", type=int, default=1, metavar="N")
    parser.add_argument("--seconds-per-status", type=float, default=None, metavar="S")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S", help="seconds added per response")
    parser.add_argument("--path-prefix", default="", help="serve under a base path, e.g. /api/llm")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    api_key = args.api_key or f"tfy-sim-{secrets.token_hex(16)}"
    simulator = GatewaySimulator(
        api_key=api_key, host=args.host, port=args.port, latency=args.latency, path_prefix=args.path_prefix
    )
    simulator.set_create_script(
        statuses=args.create_statuses,
        polls_per_status=args.polls_per_status,
        seconds_per_status=args.seconds_per_status,
    )
    simulator.can_cancel = not args.no_cancel
    simulator.ignore_list_filter = args.ignore_list_filter
    jobs = args.job or list(DEMO_JOBS.items())
    for job_id, statuses in jobs:
        simulator.add_job(
            job_id,
            statuses=statuses,
            polls_per_status=args.polls_per_status,
            seconds_per_status=args.seconds_per_status,
        )

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    simulator.start()
    try:
        connection = json.dumps({"conn_type": "truefoundry", "host": simulator.url, "password": api_key})
        print(f"TrueFoundry gateway simulator listening on {simulator.url}")
        print(f"API key: {api_key}")
        for job_id, statuses in jobs:
            print(f"Job: {job_id} ({' -> '.join(statuses)})")
        print(f"export AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT={shlex.quote(connection)}")
        print(f"Created jobs: {' -> '.join(args.create_statuses)} (POST /fine_tuning/jobs)")
        print(f"Script more jobs: POST {simulator.url}/__simulator__/jobs (same bearer key)")
        print("Press Ctrl+C to stop.", flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        simulator.stop()
    print("Simulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
