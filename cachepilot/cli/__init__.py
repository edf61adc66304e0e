"""`cachepilot` command line: train, collect, search, fit, generate, evaluate, bench.

One module per command, each registering its parser (`register`) and importing its heavy dependencies (torch,
diffusers, Lightning, the embedded models) inside its `run`, so `cachepilot --help` loads none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cachepilot.errors import CachepilotError

COMMANDS = ("train", "generate", "evaluate", "bench", "collect", "search_schedule", "calibrate", "add_prior",
            "export", "fit", "fit_combination")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cachepilot", description="learned caching decisions for diffusion "
                                                                    "transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cachepilot.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cachepilot.cli.common import quiet

    quiet()
    try:
        args.func(args)
    except (CachepilotError, FileNotFoundError) as err:
        print(f"cachepilot: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("cachepilot: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
