"""Connection methods. Importing this package registers every method in `registry.METHODS`."""

from lowloss.connect import curves  # noqa: F401  (registers the garipov-* methods)
