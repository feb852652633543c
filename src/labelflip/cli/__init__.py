"""The ``labelflip`` command.

Every error a user can cause is a :class:`LabelflipError`: the command
prints ``labelflip: error: <one line>`` to stderr and exits with status 1
(status 2 for command-line usage errors, also one line; 130 on Ctrl-C).
Failures of the machine (disk full, read-only directory) are one line too,
and warnings print as one ``labelflip: warning: <text>`` line.

The package: ``_parser`` (argparse), ``_runs`` and ``_models`` (the
subcommands: argparse in, printing out; the work is done by the stages they
call), ``_common`` (shared helpers).
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Sequence

from labelflip.cli._parser import build_parser
from labelflip.errors import LabelflipError, os_error

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["labelflip", *(sys.argv[1:] if argv is None else argv)])
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
        except LabelflipError as e:
            print(f"labelflip: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt as e:  # a run stopped by Ctrl-C says how to resume
            print(f"labelflip: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
            return EXIT_INTERRUPT
        except BrokenPipeError as e:
            if not _stdout_closed():  # another pipe broke: a failure like any other
                print(f"labelflip: error: {os_error('input/output failed', e)}", file=sys.stderr)
                return EXIT_ERROR
            # Output piped into e.g. `head`, which has read what it wanted and left:
            # end quietly (Python's recipe), the work done.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as e:  # disk full, read-only or vanished files not caught closer by
            where = f"cannot access {e.filename}" if e.filename else "input/output failed"
            print(f"labelflip: error: {os_error(where, e)}", file=sys.stderr)
            return EXIT_ERROR


def _stdout_closed() -> bool:
    """Whether our standard output is a pipe whose reader has gone."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here: assume it was stdout
        return True


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"labelflip: warning: {text}", file=sys.stderr if file is None else file)
