"""How fast can any durable endpoint go here, against the bare one?

    python bench/ceiling.py [--smoke] [--workers N]

Four endpoints under the same gunicorn settings (sync workers, one thread
each, N workers; the best setting found for the bare endpoint and the only one
where a committer process can group posts without threads), loaded by wrk at
bench/run.py's concurrency, alternating over rounds, medians printed:

- bare Flask that only parses the form (bench/bare.py);
- the same plus one durable SQLite commit per post (bench/bare_commit.py);
- the same, but the rows go to one committer process that group-commits the
  posts of every worker (bench/committer.py): the best case for a durable
  endpoint in this stack, with no validation, composition or logging;
- Formpost itself, under these settings.

The ratios to the bare endpoint are the ceiling that the accept target
(bench/README.md) is measured against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgschema import throwaway_schema  # noqa: E402
from run import PY, ROOT, accept_point, base_env, process, sink  # noqa: E402

# The WSGI app of each point (bench/ is on gunicorn's path).
APPS = {
    "bare": "bare:app",
    "bare_commit": "bare_commit:app",
    "committer": "committer:app",
    "formpost": "wsgi:app",
    "bare_commit_postgres": "bare_commit:app",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds only")
    parser.add_argument("--workers", type=int, help="default 16 (smoke: 2)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also the bare endpoint committing to PostgreSQL (postgresql+psycopg://"
        "...); a throw-away schema is made there and dropped",
    )
    args = parser.parse_args()
    seconds, rounds, conns = (2, 1, 8) if args.smoke else (8, 3, 32)
    args.workers = args.workers or (2 if args.smoke else 16)
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    gunicorn += ["-k", "sync", "--threads", "1", "-w", str(args.workers)]
    gunicorn += ["--pythonpath", "bench"]
    points: dict[str, list[dict[str, float]]] = {
        "bare": [],
        "bare_commit": [],
        "committer": [],
        "formpost": [],
    }
    if args.postgres:
        points["bare_commit_postgres"] = []
    with ExitStack() as outer:
        tmp = Path(outer.enter_context(tempfile.TemporaryDirectory()))
        relay = outer.enter_context(sink(tmp))
        pg_url = (
            outer.enter_context(throwaway_schema(args.postgres))
            if args.postgres
            else ""
        )
        for n in range(rounds):
            for key in points:
                db = tmp / f"{key}-{n}.db"
                env = base_env(tmp, relay, DATABASE_URL=f"sqlite:///{db}")
                if key == "bare_commit_postgres":
                    env["DATABASE_URL"] = pg_url
                with ExitStack() as stack:
                    if key == "committer":
                        env["COMMITTER_SOCKET"] = str(tmp / f"{key}-{n}.sock")
                        argv = [PY, str(ROOT / "bench" / "committer.py")]
                        argv += [str(db), env["COMMITTER_SOCKET"]]
                        stack.enter_context(
                            process(
                                argv,
                                env,
                                tmp / f"{key}-{n}-committer.log",
                                ready=Path(env["COMMITTER_SOCKET"]).exists,
                            )
                        )
                    point = accept_point(
                        tmp,
                        f"{key}-{n}",
                        gunicorn + [APPS[key]],
                        env,
                        seconds,
                        conns,
                        with_worker=False,
                    )
                if point["errors"]:
                    print(f"ceiling: {key}: {point['errors']} requests failed")
                    return 1
                points[key].append(point)
    bare = statistics.median(p["rps"] for p in points["bare"])
    print(
        f"\nsync workers: {args.workers}, {conns} connections, {seconds} s per "
        f"point, median of {rounds} rounds\n"
    )
    print(f"{'endpoint':<38}{'req/s':>8}{'/ bare':>8}{'p99 ms':>8}")
    medians = {}
    for key, label in (
        ("bare", "bare Flask, parse only"),
        ("bare_commit", "+ 1 durable commit per post"),
        ("committer", "+ group commit in a committer process"),
        ("formpost", "Formpost"),
        ("bare_commit_postgres", "+ 1 durable PostgreSQL commit per post"),
    ):
        if key not in points:
            continue
        rps = statistics.median(p["rps"] for p in points[key])
        p99 = statistics.median(p["p99_ms"] for p in points[key])
        medians[key] = {"rps": rps, "p99_ms": p99, "ratio_to_bare": rps / bare}
        print(f"{label:<38}{rps:>8.0f}{rps / bare:>8.2f}{p99:>8.1f}")
    settings = {"workers": args.workers, "connections": conns, "seconds": seconds}
    results = {"settings": {**settings, "rounds": rounds, "smoke": args.smoke}}
    results |= {"median": medians, "rounds": points}
    name = "ceiling-smoke.json" if args.smoke else "ceiling.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(results, indent=2))
    print(f"\nwritten: bench/results/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
