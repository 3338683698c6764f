"""lowloss: low-loss connection of neural-network weight vectors (Anokhin & Yarotsky, ICML 2020)."""

import os

__version__ = "0.1.0"

# CPU results must not depend on the thread count: MKL's strict reproducible mode makes its matrix
# products give the same bits on 1 or N threads (MKL reads this on its first call; a value the user
# set wins). Without it, training with OMP_NUM_THREADS=1 and with 2 threads differs by ~1e-8.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
