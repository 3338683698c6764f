"""Names and default values that the command line shows in `--help`, in a module without torch.

Parsers are built from here so that `lowloss --help` answers at once; the modules that use these
values import torch and keep their own copies, which tests/test_cli_startup.py checks against these.
(Method names, OT solvers and weight-adjustment defaults come from `lowloss.connect.registry` and
`lowloss.connect.context`, which import no torch themselves.)
"""

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "synthetic-mnist", "synthetic-cifar")
"""`lowloss.data.LOADERS`, in its order."""
ARCHITECTURES = ("onehidden", "fc3", "conv2fc1", "vgg16", "resnet20")
"""`lowloss.models.ARCHITECTURES`, in its order."""
NORMS = ("batch", "layer", "none")
"""`lowloss.resnet.NORMS`: resnet20's normalisation layers."""
TRAIN = {"epochs": 30, "lr": 0.01, "batch_size": 128, "weight_decay": 1e-4, "seed": 0}
"""`lowloss.train.TrainConfig()` (the paper's §5 settings)."""
FIT_CONNECTOR = {"steps": 2000, "lr": 1e-3, "seed": 0, "layers": 6, "hidden": 128}
"""`lowloss.connect.flows.optimise.FitConfig()` and the default ν size (`lowloss.connect.flows.nu`)."""
