"""The ``tfface`` command: a thin dispatcher over the sub-commands of each package.

Every module named in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
sub-commands with ``parser.set_defaults(func=...)``; ``func(args)`` returns the exit status.
Bad input raises :class:`tfface.errors.TffaceError`, which is printed as one clear line.
Every command runs with TensorFlow's pooling CPU allocator (:mod:`tfface.runtime`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tfface.errors import TffaceError
from tfface.runtime import use_pooled_cpu_allocator

#: Modules that contribute sub-commands, in the order they appear in ``tfface --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "tfface.morphable.commands",
    "tfface.data.commands",
    "tfface.training.commands",
    "tfface.training.self_label_commands",
    "tfface.albedo_commands",
    "tfface.export_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfface",
        description="Unsupervised, model-based dense face alignment (Koizumi & Smith, ECCV 2020).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    use_pooled_cpu_allocator()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TffaceError as error:
        print(f"tfface {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
