from attribkit.hookspecs import hookimpl
from attribkit.model.convnet import ConvNet
from attribkit.specs import BackboneSpec


def resnet_width(width: float) -> dict:
    return {"channels": tuple(max(8, int(c * width)) for c in (64, 128, 256, 512)), "stem_width": max(8, int(64 * width))}


@hookimpl
def register_backbones(register):
    # The paper uses ResNet50 (MNIST) and ResNet101 (ImageNet) as shared layers.
    for name in ("resnet18", "resnet50", "resnet101"):
        register(BackboneSpec(name, name, width_kwargs=resnet_width, description=f"timm {name}, pretrained=False"))
    register(BackboneSpec("convnet", create=ConvNet, width_kwargs=lambda width: {"width": width},
                          description="plain 3×3 convolutions at full resolution (64/128/128 channels at width 1), "
                                      "for small images"))
