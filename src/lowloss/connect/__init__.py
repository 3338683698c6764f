"""Connection methods. Importing this package registers every method in `registry.METHODS`."""

from lowloss.connect import adjust, interpolate, permutation  # noqa: F401  (linear, arc, ot, *+wa)
from lowloss.connect import curves  # noqa: F401  (registers the garipov-* methods)
