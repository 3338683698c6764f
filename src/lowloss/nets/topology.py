"""Network topologies, for deciding which methods apply where without building (or importing) anything.

A method declares the topology it needs; a network has one (`lowloss.nets.network.Network.topology`
derives it from the spec, and the architecture table records each built-in architecture's).
"""

ANY = "any architecture"
STAGED = "networks that cut into stages (chains of layers, residual networks)"
LAYERED = "chains of dense and conv layers"
ONE_HIDDEN = "networks with one hidden layer"

INCLUDES = {
    ANY: {ANY, STAGED, LAYERED, ONE_HIDDEN},
    STAGED: {STAGED, LAYERED, ONE_HIDDEN},
    LAYERED: {LAYERED, ONE_HIDDEN},
    ONE_HIDDEN: {ONE_HIDDEN},
}
"""The topologies a method for each topology applies to (a chain is staged, a one-hidden network a chain)."""
