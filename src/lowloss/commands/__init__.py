"""Subcommands of `lowloss`: each module has NAME, HELP, add_arguments(parser) and run(args)."""

from lowloss.commands import fit_curve, info, train

COMMANDS = [train, fit_curve, info]
