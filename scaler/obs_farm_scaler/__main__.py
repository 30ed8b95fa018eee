"""python -m obs_farm_scaler [--config F] [--once] [--dry-run] [--health F]"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from .config import ConfigError, Settings, load
from .loop import HEALTH_FILE, CloudPool, Scaler


def clouds(settings: Settings) -> dict[str, CloudPool]:
    out: dict[str, CloudPool] = {}
    for pool in settings.pools:
        if pool.azure is not None:
            from .azure import AzurePool

            out[pool.name] = AzurePool(pool.azure)
        elif pool.aws is not None:
            from .aws import AwsPool

            out[pool.name] = AwsPool(pool.aws)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obs-farm-scaler", description=__doc__)
    ap.add_argument(
        "--config", help="default: $OBS_FARM_SCALER_CONFIG or /etc/obs-farm/scaler.json"
    )
    ap.add_argument(
        "--once", action="store_true", help="one poll, then exit (status 1 if incomplete)"
    )
    ap.add_argument("--dry-run", action="store_true", help="decide and log, change nothing")
    ap.add_argument("--health", default=HEALTH_FILE, help=f"health file (default {HEALTH_FILE})")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    # The SDKs log every HTTP request at INFO; one line per decision is ours.
    for noisy in ("azure", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load(args.config)
    except ConfigError as e:
        print(f"obs-farm-scaler: {e}", file=sys.stderr)
        return 2
    try:
        pools = clouds(settings)
    except Exception as e:
        print(f"obs-farm-scaler: cannot set up the cloud clients: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scaler = Scaler(settings, pools, health_file=args.health or None, dry_run=args.dry_run)
    ok = scaler.run(stop, once=args.once)
    return 0 if ok or not args.once else 1


if __name__ == "__main__":
    sys.exit(main())
