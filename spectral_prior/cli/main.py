"""The ``spectral-prior`` command: one subcommand per job, one module each (argparse and wording only: the work is
the library's).

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status). A user error
(bad path, bad value, missing extra, a prior that cannot be downloaded: a
:class:`~spectral_prior.errors.SpectralPriorError`) raised by ``run`` ends the command with one line on stderr,
``spectral-prior COMMAND: error: ...``, and exit status 2, as argparse does for bad options. Any other exception is
a bug, and shows its traceback. A warning is one line too, ``spectral-prior COMMAND: warning: ...``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from .._version import __version__
from ..errors import SpectralPriorError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("spectral_prior.cli.demo", "reconstruct a test scene with a bare and an SDP-injected backbone, offline"),
    "train": ("spectral_prior.cli.train", "train a backbone, or a spectral diffusion prior for it, in stages"),
    "eval": ("spectral_prior.cli.eval", "score a model on simulated measurements of scenes: PSNR, SSIM, SAM, figures"),
    "reconstruct": ("spectral_prior.cli.reconstruct", "reconstruct a cube from a real 2-D CASSI measurement"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectral-prior",
        description="Spectral Diffusion Prior for hyperspectral (CASSI) reconstruction networks.",
    )
    parser.add_argument("--version", action="version", version=f"spectral-prior {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=summary, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def error_message(err: BaseException) -> str:
    """An exception as one line for the user."""
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectral-prior`` console script."""
    args = build_parser().parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"spectral-prior {args.command}: warning: {error_message(message)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return int(args.run(args) or 0)
    except SpectralPriorError as err:
        print(f"spectral-prior {args.command}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: one line (where to take up again, if the command knows), status 130
        detail = f": {error_message(err)}" if str(err) else ""
        print(f"spectral-prior {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
