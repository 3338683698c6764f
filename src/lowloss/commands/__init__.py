"""Subcommands of `lowloss`: each module has NAME, HELP, add_arguments(parser) and run(args)."""

from lowloss.commands import (connect, ensemble, ensemble_report, fit_connector, fit_curve, info, match, methods,
                              model_set, report, train)

COMMANDS = [train, fit_curve, model_set, fit_connector, match, connect, ensemble, methods, report, ensemble_report, info]
