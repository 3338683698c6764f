"""Subcommands of `lowloss`, one module each: NAME, HELP, `add_arguments(parser)` and `run(args)`."""
