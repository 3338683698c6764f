"""The `lowloss` command: the parser, one module per subcommand (`commands/`), shared options, the defaults
shown in `--help` and the line a person reads. Building the parser imports no torch.

The top of the house: may import every package; none imports it.
"""

from lowloss._lazy import lazy_exports

__all__ = ["build_parser", "main"]
__getattr__, __dir__ = lazy_exports(__name__, {"main": "main", "build_parser": "main"})
