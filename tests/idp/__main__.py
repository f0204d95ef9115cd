"""Run the test IdP out of process (benchmarks): `python -m tests.idp --port 0 --state-dir DIR`.

Prints one JSON line {"url": ..., "ca": ...} to stdout once it listens, then serves until
SIGTERM/SIGINT. Configure it through the /_test/ control endpoints.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tests.support.tls import TestCA

from .server import IdentityProvider


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.idp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="where the test CA (ca.pem) and the server certificate are written")
    parser.add_argument("--access-token-lifetime", type=int, default=3600)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    ca = TestCA(args.state_dir)
    idp = IdentityProvider(ca, host=args.host, port=args.port)
    idp.access_token_lifetime = args.access_token_lifetime
    idp.start()
    info = {"url": idp.url, "ca": str(ca.ca_path)}
    (args.state_dir / "idp.json").write_text(json.dumps(info) + "\n")
    print(json.dumps(info), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
