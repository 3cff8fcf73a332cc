from attribkit.hookspecs import hookimpl
from attribkit.specs import BackboneSpec


@hookimpl
def register_backbones(register):
    # The paper uses ResNet50 (MNIST) and ResNet101 (ImageNet) as shared layers.
    for name in ("resnet18", "resnet50", "resnet101"):
        register(BackboneSpec(name, name, description=f"timm {name}, pretrained=False"))
