"""The ``streamlstm`` command line.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage or bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streamlstm.errors import StreamLSTMError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlstm",
        description="Keras-exact LSTM layers on PyTorch, run over live Apache Arrow streams.",
        epilog="Exit codes: 0 success, 2 bad usage or input. Run 'streamlstm COMMAND --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="run the showcase (what 'make demo' runs)",
                               description="Run the Keras documentation examples on PyTorch and print shapes "
                                           "and timings.")
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from streamlstm.demo import run_layers_demo

    run_layers_demo()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StreamLSTMError as exc:
        print(f"streamlstm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
