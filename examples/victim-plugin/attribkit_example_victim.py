"""A victim plugin: LeNet-5, plain PyTorch. Any nn.Module that maps
(N, in_chans, H, W) images to logits can be a victim; attribkit wraps it
with the data set's normalisation and stores it as safetensors."""

from torch import nn

from attribkit import hookimpl, VictimSpec


def lenet5(num_classes: int, in_chans: int, width: float = 1.0) -> nn.Module:
    c1, c2 = max(2, round(6 * width)), max(4, round(16 * width))
    return nn.Sequential(
        nn.Conv2d(in_chans, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


@hookimpl
def register_victims(register):
    register(VictimSpec("lenet5", lenet5, family="LeNet", min_size=28, default_width=1.0, lr=2e-3,
                        description="LeNet-5 (LeCun et al. 1998), plain PyTorch"))
