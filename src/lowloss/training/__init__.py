"""Data and training: the datasets as tensors on the device, the one way to pick a device, and endpoint
training (resumable, bit-stable).

Imports `lowloss.storage`, `lowloss.nets` and `lowloss.errors`.
"""

from lowloss._lazy import lazy_exports

__all__ = ["Dataset", "TrainConfig", "load_dataset", "pick_device", "train", "train_endpoint"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Dataset": "data",
        "load_dataset": "data",
        "pick_device": "device",
        "TrainConfig": "train",
        "train": "train",
        "train_endpoint": "train",
    },
)
