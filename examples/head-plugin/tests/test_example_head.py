import torch

from attribkit import plugins
from attribkit.model.heads import HeadContext
from attribkit.train.config import TrainConfig
from attribkit.train.models import applicable_heads

from attribkit_example_head import VictimFamilyHead, family


def test_family_names():
    assert [family(v) for v in ("resnet18", "resnet50", "vgg16", "inception_v3")] == \
        ["resnet", "resnet", "vgg", "inception"]


def test_the_trainer_picks_the_head_up():
    plugins.reset()
    names = [s.name for s in applicable_heads(["attack", "victim", "hp_eps"], TrainConfig())]
    assert "victim_family" in names
    assert "victim_family" not in [s.name for s in applicable_heads(["attack", "hp_eps"], TrainConfig())]


def test_targets_follow_the_victim_labels():
    context = HeadContext({"victim": ["resnet18", "vgg16", "resnet50"]}, {"victim": 4})
    head = VictimFamilyHead(context)
    target, mask = head.target({"victim": torch.tensor([0, 1, 2, 2])})
    assert head.classes == ["resnet", "vgg"] and target.tolist() == [0, 1, 0, 0] and mask.all()
    out = head({"victim": torch.randn(4, 4)}, {})
    assert out.shape == (4, 2)
    loss = head.loss(out, {"victim": torch.tensor([0, 1, 2, 2])})
    assert loss.item() == torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 0])).item()
