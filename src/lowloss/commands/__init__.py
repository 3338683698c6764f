"""Subcommands of `lowloss`: each module has NAME, HELP, add_arguments(parser) and run(args)."""

from lowloss.commands import info, train

COMMANDS = [train, info]
