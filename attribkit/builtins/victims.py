from functools import partial

from attribkit.hookspecs import hookimpl
from attribkit.specs import VictimSpec
from attribkit.victims import families


@hookimpl
def register_victims(register):
    # The paper's five victim families (Table 1).
    register(VictimSpec("resnet18", partial(families.resnet, "resnet18"), "ResNet", "resnet18",
                        description="timm resnet18, width-scaled"))
    register(VictimSpec("resnet50", partial(families.resnet, "resnet50"), "ResNet", "resnet50",
                        description="timm resnet50, width-scaled"))
    register(VictimSpec("vgg16", partial(families.vgg, "vgg16"), "VGG", "vgg16", min_size=32, lr=5e-4,
                        description="timm vgg16 (no BN), width-scaled; images upsampled to ≥32 px"))
    register(VictimSpec("vgg19", partial(families.vgg, "vgg19"), "VGG", "vgg19", min_size=32, lr=5e-4,
                        description="timm vgg19 (no BN), width-scaled; images upsampled to ≥32 px"))
    register(VictimSpec("inception_v3", families.inception_v3, "Inception", "inception_v3", min_size=75,
                        description="timm inception_v3, every conv width-scaled; images upsampled to ≥75 px"))
