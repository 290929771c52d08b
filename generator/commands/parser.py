"""The command-line parser of a set of commands: their sub-parsers and the flags all share.

``cli.make_parser`` builds the whole ``gen-repo`` parser from every command; ``demo`` builds one
from the commands it runs. Each command module has ``add_parser(subparsers)``.
"""

from __future__ import annotations

import argparse


def command_parser(commands, **kwargs) -> argparse.ArgumentParser:
    """A ``gen-repo`` parser holding ``commands`` (command modules); ``kwargs`` go to argparse."""
    parser = argparse.ArgumentParser(prog="gen-repo", **kwargs)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show tracebacks and more detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in commands:
        module.add_parser(sub)
    _add_common_flags(sub)
    return parser


def _add_common_flags(sub) -> None:
    """-v / -q also after a command name (and a sub-command's, e.g. deploy k8s)."""
    for command in sub.choices.values():
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks and more detail")
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress output")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_common_flags(action)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it has none (None, False) or its help
    already says what the default is."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
