"""Reads a schemathesis NDJSON report: prints how many cases were tried and
which statuses each operation answered. With --unauthenticated, fails
unless every operation outside --open answered 401 and nothing else."""

import argparse
import collections
import json
import sys


def read(report):
    """(cases tried, {operation: Counter(status)}) of one report."""
    cases = 0
    statuses = collections.defaultdict(collections.Counter)
    with open(report, encoding="utf-8") as f:
        for line in f:
            finished = json.loads(line).get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            cases += len(recorder.get("cases", {}))
            for interaction in recorder.get("interactions", {}).values():
                response = interaction.get("response")
                status = response["status_code"] if response else "no answer"
                statuses[recorder["label"]][status] += 1
    return cases, statuses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    parser.add_argument("--name", required=True, help="the pass, for the output")
    parser.add_argument("--open", default="", help="paths that need no token, comma-separated")
    parser.add_argument("--unauthenticated", action="store_true")
    args = parser.parse_args()
    cases, statuses = read(args.report)
    print(f"fuzz pass {args.name}: {cases} cases tried")
    for operation in sorted(statuses):
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(statuses[operation].items(), key=str))
        print(f"  {operation}: {counts}")
    failed = cases == 0
    if args.unauthenticated:
        open_paths = set(filter(None, args.open.split(",")))
        for operation, counts in statuses.items():
            path = operation.split(" ", 1)[1]
            if path not in open_paths and set(counts) != {401}:
                print(f"  {operation} answered {dict(counts)} without a token; only 401 is right")
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
