"""Learned connections (§3.3): ν (`nu`), what fitting it minimises (`objectives`), the optimiser loop
(`optimise`), and connectors fitted on a model set and applied by eq. (7) (`connector`)."""
