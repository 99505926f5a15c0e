"""The command line: ``pydiskimg SUBCOMMAND ...``.

Each subcommand lives in ``pydiskimg/commands/<name>.py`` and provides
``register(subparsers)`` (adds its parser, sets ``func``) .  The CLI owns the terminal: library
code raises :class:`pydiskimg.errors.Error`, which is printed here on one line, exit status 2.
SIGINT and SIGTERM raise :class:`pydiskimg.errors.Interrupted` in the main thread (the first
one; later ones must not cut the cleanups short); every step cleans up as it unwinds (child
processes killed, partial output removed), then one line says why and the exit status is 130
or 143.  While outputs move into place the signal is held (:func:`pydiskimg.io.commit`), and
once they are in place it is ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys

from . import __version__
from .errors import Error, Interrupted
from .io import on_signal, signals

SUBCOMMANDS = ("build", "partition", "ext4", "fat", "inspect", "diff", "split")
#: The signals that stop any command cleanly (exit status 128 + the signal's number).
_STOP_SIGNALS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class _Parser(argparse.ArgumentParser):
    """No abbreviations: ``--bootloader`` must never be read as ``--bootloader-in-appliance``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand is imported (a faster start)."""
    parser = _Parser(
        prog="pydiskimg",
        description="Bootable disk images (MBR/GPT, ext4, FAT32) written from a tree, "
        "with no root, no LKL and no VM.",
    )
    parser.add_argument("--version", action="version", version=f"pydiskimg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS if only is None else (only,):
        try:
            mod = importlib.import_module(f"pydiskimg.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"pydiskimg.commands.{name}":
                raise
            continue
        mod.register(sub)
    for sp in sub.choices.values():  # every command takes -q, whether it has progress or not
        if "--quiet" not in sp._option_string_actions:
            sp.add_argument("-q", "--quiet", action="store_true",
                            help="print nothing but results and errors (no progress, no warnings)")
    return parser


def main(argv: list[str] | None = None, *, _exiting: bool = False) -> int:
    """Run one command; returns the exit status.  ``_exiting``: the process ends right after
    (the console script), so the signal handlers stay in place until then."""
    previous = {}
    for signum in _STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not in the main thread (tests calling main)
            previous[signum] = signal.signal(signum, on_signal)
    signals.reset()
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        if not _exiting:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _main(argv: list[str]) -> int:
    # everything under the try: a signal at any moment (parsing, importing) gives one line
    try:
        first = next((a for a in argv if not a.startswith("-")), None)
        parser = make_parser(first if first in SUBCOMMANDS else None)
        args = parser.parse_args(argv)
        quiet = getattr(args, "quiet", False)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR if quiet else logging.WARNING,
            format="pydiskimg: %(message)s",
        )
        rc = int(args.func(args) or 0)
        signals.done = True  # from here on a signal changes nothing: the command is over
        return rc
    except Error as e:
        signals.done = True
        print(f"pydiskimg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signals.done = True
        signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
        print(f"pydiskimg: {_STOP_SIGNALS[signum]} by {signal.Signals(signum).name}: "
              "stopped, nothing written", file=sys.stderr)
        return 128 + signum


def run() -> None:
    """The console script: :func:`main`, then exit without tearing down the object graph.

    A large tree leaves millions of small objects behind; freeing them one by one at
    interpreter exit costs a noticeable fraction of a second for nothing.
    """
    rc = main(_exiting=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
