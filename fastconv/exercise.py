"""``fastconv-exercise``: graded exercises, in order: write the kernels
yourself and let fastconv-check grade them.

    fastconv-exercise list              the exercises, numbered
    fastconv-exercise start N DIR       copy exercise N's stub into DIR, with its instructions
    fastconv-exercise check N DIR       grade DIR's copy with fastconv-check
"""
from __future__ import annotations

import argparse
import os
import sys

from fastconv.exercises import EXERCISES, exercise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv-exercise", description=__doc__.split("\n\n")[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,start,check}")
    commands.add_parser("list", help="the exercises, in order")
    for name, what in (("start", "copy exercise N's stub into DIR"), ("check", "grade DIR's copy of exercise N")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("number", type=int, metavar="N", help=f"the exercise, 1 to {len(EXERCISES)}")
        sub.add_argument("folder", metavar="DIR", help="the folder of your copy (start creates it)")
        if name == "start":
            sub.add_argument("--force", action="store_true", help="overwrite a copy already there")
    return parser


def list_exercises() -> str:
    lines = [f"{e.number}. {e.title} ({e.file}; graded as {', '.join(c.op for c in e.checks)})" for e in EXERCISES]
    lines.append("")
    lines.append("Start one with: fastconv-exercise start N DIR")
    return "\n".join(lines)


def start(number, folder, force=False) -> int:
    found = exercise(number)
    path = os.path.join(folder, found.file)
    if os.path.exists(path) and not force:
        print(f"fastconv-exercise: {path} exists already (your work?); --force overwrites it", file=sys.stderr)
        return 1
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        f.write(found.stub())
    print(f"wrote {path}:\n")
    print(found.instructions().replace("\n", "\n  ").join(("  ", "")))
    print("\nFrom that folder, or with the path as above:")
    for check in found.checks:
        print("  " + check.command(path))
    print(f"or: fastconv-exercise check {found.number} {folder}")
    return 0


def check(number, folder) -> int:
    """Run every fastconv-check of the exercise; 0 if all pass."""
    from fastconv import check as checker

    found = exercise(number)
    path = os.path.join(folder, found.file)
    if not os.path.isfile(path):
        print(f"fastconv-exercise: no {path}: start with fastconv-exercise start {number} {folder}", file=sys.stderr)
        return 1
    status = 0
    for k, one in enumerate(found.checks):
        if k:
            print()
        print(f"$ {one.command(path)}")
        status = max(status, checker.main(one.argv(path)))
    return status


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(list_exercises())
            return 0
        if args.command == "start":
            return start(args.number, args.folder, args.force)
        return check(args.number, args.folder)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
