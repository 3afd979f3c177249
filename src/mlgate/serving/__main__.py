"""``python -m mlgate.serving --state-dir DIR --port N``: run one serving host on 127.0.0.1.

The admin token that authenticates ``PUT /admin/spec`` comes from ``MLGATE_HOST_ADMIN_TOKEN``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import warnings
from pathlib import Path

ADMIN_TOKEN_ENV = "MLGATE_HOST_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlgate.serving", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="where the last applied spec is kept")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64, help="rows per model call (the spec may override)")
    parser.add_argument(
        "--max-wait-ms", type=float, default=0.0, help="how long a batch waits for company (0: batch what is queued)"
    )
    parser.add_argument("--max-body-bytes", type=int, default=5 * 1024 * 1024)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if len(token) < 16:
        print(f"error: set {ADMIN_TOKEN_ENV} to the admin token (at least 16 characters)", file=sys.stderr)
        return 2
    # Models fitted on a DataFrame warn on every plain-array predict; the columns are in signature order.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    # The hot path allocates many short-lived objects; fewer young-generation collections cut tail latency.
    gc.set_threshold(50_000, 20, 100)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn

    from mlgate.serving.app import ServingHost
    from mlgate.serving.spec import Batching

    host = ServingHost(
        state_dir=args.state_dir,
        admin_token=token,
        batching=Batching(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms),
        max_body_bytes=args.max_body_bytes,
    )
    uvicorn.run(
        host,
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        loop="auto",
        http="auto",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
