"""`mlsec threats` [list | check [--prove] | report -o DIR]: the CLI's thin layer over the threat model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlsec.threatmodel.model import load_model


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    th = sub.add_parser("threats", help="the threat model: list, check its references, prove its controls, report")
    th.set_defaults(func=run, threats_cmd="list")
    ts = th.add_subparsers(dest="threats_cmd")
    ts.add_parser("list", help="threats, open ones first, by DREAD and likelihood x impact")
    ck = ts.add_parser("check", help="schema and references (functions import, Rego rules and tests exist)")
    ck.add_argument("--prove", action="store_true",
                    help="also remove each control in turn and show a linked test fails (slow: minutes)")
    ck.add_argument("--only", nargs="+", metavar="ID", help="prove only these threats (e.g. T02 T12)")
    rp = ts.add_parser("report", help="write the threat report (Markdown + HTML with mermaid diagrams)")
    rp.add_argument("-o", "--output", required=True, help="directory to write threats.md and threats.html into")


def run(args: argparse.Namespace) -> int:
    model = load_model()
    cmd = args.threats_cmd or "list"
    if cmd == "list":
        for t in model.ranked():
            print(f"{t.id} {t.dread.score:4.1f} {t.risk:3d}  {t.status:<9} {t.component:<9} "
                  f"{'/'.join(t.stride):<28} {','.join(t.atlas):<24} {t.title}")
        return 0
    if cmd == "report":
        from mlsec.threatmodel.report import write

        for path in write(model, Path(args.output)):
            print(f"wrote {path}")
        return 0
    from mlsec.threatmodel import proof

    problems = proof.check(model)
    for p in problems:
        print(f"threats check: {p}", file=sys.stderr)
    controls = sum(len(t.controls) for t in model.threats)
    print(f"threats check: {len(model.threats)} threats, {controls} controls, "
          f"{sum(len(t.tests) for t in model.threats)} test links: {'ok' if not problems else f'{len(problems)} problems'}")
    if problems or not args.prove:
        return 1 if problems else 0
    proofs = proof.prove(model, set(args.only) if args.only else None)
    print(proof.table(proofs))
    return 0 if all(p.proven for p in proofs) else 1
