import torch

from attribkit import HeadContext, Labels, LabelSpaces, TrainConfig, plugins
from attribkit.training.models import applicable_heads

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
    spaces = LabelSpaces(attacks=(), victims=("resnet18", "vgg16", "resnet50"), hyperparameters={}, attack_info={})
    head = VictimFamilyHead(HeadContext(spaces, {"victim": 4}))
    labels = Labels(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 2]), torch.zeros(4, 0),
                    torch.full((4,), -1))
    target, mask = head.target(labels)
    assert head.classes == ["resnet", "vgg"] and target.tolist() == [0, 1, 0, 0] and mask.all()
    out = head({"victim": torch.randn(4, 4)}, {})
    assert out.shape == (4, 2)
    loss = head.loss(out, labels)
    # the core's masked mean (no host sync on a GPU) adds in its own order: equal to float rounding
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 0])))
