"""Sub-commands. Each module has ``add_parser(subparsers)``, which sets ``run(args) -> int``."""

from . import bench, build, demo, deploy, pack_env, push, serve, verify

COMMANDS = [build, serve, verify, bench, demo, push, deploy, pack_env]
