"""Kinds of network, for deciding which methods apply where without building (or importing) anything.

A method declares the kind it needs; an architecture has one kind. `lowloss.network.Network.kind`
derives the kind from a real spec, and a test checks it against `ARCHITECTURE_KINDS`.
"""

ANY = "any architecture"
STAGED = "networks that cut into stages (chains of layers, residual networks)"
LAYERED = "chains of dense and conv layers"
ONE_HIDDEN = "networks with one hidden layer"

INCLUDES = {ANY: {ANY, STAGED, LAYERED, ONE_HIDDEN}, STAGED: {STAGED, LAYERED, ONE_HIDDEN},
            LAYERED: {LAYERED, ONE_HIDDEN}, ONE_HIDDEN: {ONE_HIDDEN}}
"""The kinds of network a method for each kind applies to (a chain is staged, a one-hidden network a chain)."""

ARCHITECTURE_KINDS = {"onehidden": ONE_HIDDEN, "fc3": LAYERED, "conv2fc1": LAYERED, "vgg16": LAYERED,
                      "resnet20": STAGED}

WEIGHT_LAYERS = {"onehidden": 2, "fc3": 3, "conv2fc1": 3, "vgg16": 16, "resnet20": 22}
"""Dense and conv layers of each architecture (WA(n) of an ensemble needs 1 ≤ n < this); a test checks it
against `lowloss.network.Network`."""
