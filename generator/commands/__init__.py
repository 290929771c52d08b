"""Sub-commands, one module each, on top of every stage: each has ``add_parser(subparsers)``,
which sets ``run(args) -> int``. ``generator.cli`` lists them and is the only place that prints
errors and picks exit codes."""
