"""Sub-commands. Each module has ``add_parser(subparsers)``, which sets ``run(args) -> int``."""

from . import build, serve, verify

COMMANDS = [build, serve, verify]
