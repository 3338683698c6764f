"""lowloss: low-loss connection of neural-network weight vectors (Anokhin & Yarotsky, ICML 2020).

The Python API (`lowloss.api`): `connect(model_a, model_b, method, train=…, test=…)` builds a method's path
between two networks and evaluates it, `match(model_a, model_b)` aligns B's units to A's, `infer_spec(model,
input_shape)` says which units permute together, `image_folder(DIR)` reads an image folder. Importing lowloss
imports no torch; each name imports what it needs on first use.
"""

import os

from lowloss._lazy import lazy_exports

__version__ = "0.1.0"

# CPU results must not depend on the thread count: MKL's strict reproducible mode makes its matrix
# products give the same bits on 1 or N threads (MKL reads this on its first call; a value the user
# set wins). Without it, training with OMP_NUM_THREADS=1 and with 2 threads differs by ~1e-8.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__all__ = ["Connection", "Matching", "__version__", "connect", "image_folder", "infer_spec", "match"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "connect": "api.connection",
        "Connection": "api.connection",
        "match": "api.matching",
        "Matching": "api.matching",
        "infer_spec": "api.models",
        "image_folder": "training.user_data",
    },
)
