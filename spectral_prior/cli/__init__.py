"""The ``spectral-prior`` command line: :mod:`.main` (the entry point) and one module per subcommand (:mod:`.train`,
:mod:`.eval`, :mod:`.reconstruct`, :mod:`.demo`), sharing :mod:`.common`. The library never imports this package."""
from .main import COMMANDS, build_parser, error_message, main

__all__ = ["COMMANDS", "build_parser", "error_message", "main"]
