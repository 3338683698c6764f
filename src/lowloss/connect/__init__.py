"""Connection methods. Importing this package registers every method in `registry.METHODS`."""

from lowloss.connect import adjust, interpolate, permutation  # noqa: F401  (linear, arc, ot, *+wa)
from lowloss.connect import curves  # noqa: F401  (registers the garipov-* methods)
from lowloss.connect import flows  # noqa: F401  (registers realnvp-flow, iaf-flow, realnvp-bijection)
