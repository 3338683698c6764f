"""Defaults shared by the Python API and the command line, importable without torch (the CLI shows them)."""

POINTS = 21
"""Evaluated points per leg of a path."""
REPAIR_BATCHES = 8
"""1024 samples: a channel's mean and deviation then have a standard error of about 3 % of its deviation
(less for conv channels, which add every position), and measuring them at a point and its leg's ends costs
about 4 % of evaluating the point on Fashion-MNIST's 70000 images."""
