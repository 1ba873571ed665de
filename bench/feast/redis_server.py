"""Run a command with a throwaway Redis on a free loopback port, then stop the Redis.

    bench/.venv-feast/bin/python bench/feast/redis_server.py -- CMD ARGS...

Every `{redis}` in CMD ARGS becomes 127.0.0.1:PORT (also exported as BENCH_REDIS), so several
benchmarks can share one materialized Redis, e.g.

    bench/.venv-feast/bin/python bench/feast/redis_server.py -- sh -c '
        P=bench/.venv-feast/bin/python
        $P bench/feast/feast_online.py --data bench/data/serve --redis {redis} --entities-per-request 1 --requests 10000
        $P bench/feast/feast_serve.py --data bench/data/serve --redis {redis} --entities-per-request 1 --find-max'

The Redis is non-persistent (--save "" --appendonly no) and is stopped when CMD exits or
after --timeout seconds, whichever comes first. Exits with CMD's exit code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import redis_server, stop


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=4 * 3600, help="stop CMD after this many seconds")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given")

    with redis_server() as addr:
        print(f"redis_server: {addr}", file=sys.stderr)
        proc = subprocess.Popen(
            [part.replace("{redis}", addr) for part in command], env={**os.environ, "BENCH_REDIS": addr}
        )
        try:
            return proc.wait(args.timeout)
        except subprocess.TimeoutExpired:
            print(f"redis_server: command still running after {args.timeout}s, stopping it", file=sys.stderr)
            stop(proc)
            return 124
        finally:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
