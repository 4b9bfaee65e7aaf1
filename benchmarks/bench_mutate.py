"""Mutation score of the regression: single faults planted in hdl/, the covering tests run on
each (:mod:`secateur.verif.mutate`).

Run as ``python benchmarks/bench_mutate.py`` (``make mutate``; not part of ``make bench``'s CI
figures: a sample of 40 mutants takes about an hour on one core). It copies the package at
``HEAD`` to a temporary directory (the checkout is never written), lists every mutation of
``hdl/*.py`` and ``hdl/engines/*.py`` (operator swaps, off-by-one constants, deleted
``m.d.comb``/``m.d.sync`` assignments, comb/sync swaps), draws a seeded sample stratified by
kind, and prints for each mutant whether it is equivalent (the Verilog of the affected
engines at their test configurations is unchanged), killed or survived; then the kill ratio
of the non-equivalent mutants and every survivor with its file, line and fault, grouped by
kind.

Options: ``--seed S`` (default 1), ``--limit N`` (default 40), ``--engine E`` (only faults that
may change E's Verilog, tested on E), ``--kind K`` (repeatable), ``--timeout SECONDS`` per
mutant's tests, ``--no-baseline`` (skip checking that the unmutated copy passes), ``--json
PATH`` (every outcome), ``--list`` (print the sample and stop). Replay one mutant with the
same ``--seed``/``--engine``/``--kind`` and ``--only INDEX``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from secateur.verif.mutate import ENGINES, Workspace, engines_of, mutations, sample

REPOSITORY = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--engine", choices=ENGINES)
    parser.add_argument("--kind", action="append",
                        choices=("operator", "constant", "delete", "domain"))
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--only", type=int, help="run only the mutant at this index of the sample")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    workspace = Workspace(REPOSITORY, timeout=args.timeout)
    try:
        every = [m for m in mutations(workspace.package, workspace.files())
                 if args.kind is None or m.kind in args.kind]
        drawn = sample(every, args.seed, args.limit, args.engine)
        print(f"{len(every)} mutations of {len(workspace.files())} files "
              f"({dict(Counter(m.kind for m in every))}); sample of {len(drawn)}, seed "
              f"{args.seed}{f', engine {args.engine}' if args.engine else ''}; copy at "
              f"{workspace.package}")
        if args.list:
            for index, mutation in enumerate(drawn):
                print(f"{index:4d} {mutation.where:32} {mutation.kind:9} {mutation.description}")
            return 0
        if args.only is not None:
            drawn = [drawn[args.only]]
        if not args.no_baseline:
            tested = sorted({engine for m in drawn for engine in engines_of(m.file)}
                            & ({args.engine} if args.engine else set(ENGINES)))
            for engine in tested:
                failure = workspace.test(engine)
                if failure:
                    print(f"baseline: the unmutated covering tests of {engine} fail: {failure}")
                    return 1
            print(f"baseline: the covering tests of {', '.join(tested)} pass "
                  f"({time.perf_counter() - start:.0f} s)")
        outcomes = []
        for index, mutation in enumerate(drawn):
            if args.engine:
                # A shared file is tested on the chosen engine only.
                workspace_engines = engines_of(mutation.file)
                if args.engine not in workspace_engines:
                    continue
            outcome = workspace.run(mutation, engines=(args.engine,) if args.engine else None)
            outcomes.append(outcome)
            if args.json:  # after every mutant: a run cut short keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"seed": args.seed, "engine": args.engine,
                                                 "outcomes": [o.as_dict() for o in outcomes]},
                                                indent=1) + "\n")
            print(f"[{index + 1}/{len(drawn)}] {outcome.status:10} {mutation.where:32} "
                  f"{mutation.kind:9} {mutation.description:28} {outcome.detail[:90]} "
                  f"({outcome.seconds:.0f} s)", flush=True)
    finally:
        workspace.close()

    statuses = Counter(outcome.status for outcome in outcomes)
    live = statuses["killed"] + statuses["survived"]
    print()
    print(f"mutants: {len(outcomes)}; equivalent {statuses['equivalent']}, killed "
          f"{statuses['killed']}, survived {statuses['survived']}, invalid {statuses['invalid']}")
    if live:
        print(f"kill ratio: {statuses['killed']}/{live} = {100.0 * statuses['killed'] / live:.1f}% "
              f"of the non-equivalent mutants (target 95%)")
    by_kind = defaultdict(list)
    for outcome in outcomes:
        if outcome.status == "survived":
            by_kind[outcome.mutation.kind].append(outcome)
    for kind, survivors in sorted(by_kind.items()):
        print(f"survivors ({kind}):")
        for outcome in survivors:
            print(f"  {outcome.mutation.where}: {outcome.mutation.description} "
                  f"(engines {', '.join(outcome.engines)})")
    load = os.getloadavg()
    print(f"{time.perf_counter() - start:.0f} s; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
