import pytest
import torch

from attribkit import plugins
from attribkit.errors import AttribkitError
from attribkit.model.backbone import StagedBackbone
from attribkit.builtins.heads import HyperparameterHead
from attribkit.model.heads import HeadContext
from attribkit.model.losses import UncertaintyWeighting
from attribkit.model.net import Architecture, AttributionNet
from attribkit.model.perturbation import PerturbationAutoEncoder
from attribkit.records import Labels, LabelSpaces
from attribkit.specs import BackboneSpec

LABELS = LabelSpaces.from_json({
    "attack": ["fgsm", "pgd", "cw"], "victim": ["a", "b"],
    "hyperparameters": {"eps": {"unit": "/255", "scale": 255.0, "symbol": "ε"}, "kappa": {"unit": "", "scale": 1.0, "symbol": "κ"}},
    "attack_info": {"fgsm": {"hyperparameters": ["eps"], "norm": "Linf"}, "pgd": {"hyperparameters": ["eps"], "norm": "Linf"},
                    "cw": {"hyperparameters": ["kappa"], "norm": "L2"}},
})
STATS = {"eps": {"mean": 100.0, "std": 50.0}, "kappa": {"mean": 5.0, "std": 2.0}, "*": {"mean": 60.0, "std": 60.0}}


def test_autoencoder_has_table_6_shapes_on_a_14px_map():
    ae = PerturbationAutoEncoder(16, width=1.0)
    fm = torch.rand(2, 16, 14, 14)
    sizes = []
    x = fm
    for layer in ae.encoder:
        x = layer(x)
        if not isinstance(layer, torch.nn.ReLU):
            sizes.append(x.shape[-1])
    assert sizes == [8, 4, 3, 2] and x.shape[1] == 256
    y = x
    for layer in ae.decoder:
        y = layer(y)
        if not isinstance(layer, torch.nn.ReLU):
            sizes.append(y.shape[-1])
    assert sizes[4:] == [5, 11, 14] and y.shape == fm.shape
    latent, target = ae.encode(fm), torch.rand_like(fm)
    assert ae.loss(latent, target).item() == pytest.approx(((ae.decoder(latent) - target) ** 2).mean().item())
    assert ae.loss(latent, ae.decoder(latent).detach()).item() == 0


def test_backbone_split_reproduces_timm_and_taps_early_and_late_maps():
    bb = StagedBackbone(plugins.get("backbones", "resnet18"), in_chans=1, image_size=28, width=0.125)
    taps = bb(torch.rand(3, 1, 28, 28))
    assert taps["pe"].shape[-1] == 14 and taps["low"].shape[-1] == 7 and taps["shared"].shape[-1] == 2
    assert bb.last_stage(taps["shared"]).shape[1] == bb.channels["last"]


def test_backbone_without_stages_is_a_clear_error():
    with pytest.raises(AttribkitError, match="no top-level feature stages|does not reproduce"):
        StagedBackbone(BackboneSpec("vit", "test_vit"), in_chans=1, image_size=32)


def _net(**arch):
    reg = plugins.registry()
    names = ("attack", "victim", "hyperparameter")
    builders = [reg.get("heads", n).build for n in names]
    return AttributionNet(Architecture(width=0.125, **arch), reg.get("backbones", "resnet18"), 1, 28, builders,
                          HeadContext(LABELS, {}, STATS, heads=names))


def test_mtaa_outputs_and_branches():
    net = _net()
    assert set(net.branches) == {"attack", "victim"}
    adv, clean = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    out, ae = net.eval().forward_train(adv, clean)  # eval: the normalisation statistics stay as they are
    assert out["attack"].shape == (4, 3) and out["victim"].shape == (4, 2)
    assert out["hyperparameter"].shape == (4, 3)  # (fgsm, eps), (pgd, eps), (cw, kappa)
    # eq. 4: the auto-encoder reconstructs the feature-level perturbation fm_adv − fm_clean
    latent = net.ae.encode(net.backbone(adv)["pe"])
    perturbation = net.backbone.stem_features(adv) - net.backbone.stem_features(clean)
    assert ae.item() == pytest.approx(((net.ae.decoder(latent) - perturbation) ** 2).mean().item(), rel=1e-5)
    plain = _net(perturbation=False, task_specific=False, fusion=False)
    assert set(plain.branches) == {"shared"} and plain.ae is None
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in net.parameters())
    assert plain.forward_train(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28))[1] is None


def test_attack_logits_feed_the_regressor():
    net = _net()
    head = net.heads["hyperparameter"]
    feats, _ = net.features(torch.rand(2, 1, 28, 28))
    base = head(feats, {"attack": torch.zeros(2, 3)})
    moved = head(feats, {"attack": torch.tensor([[5.0, 0, 0], [5.0, 0, 0]])})
    assert not torch.allclose(base, moved)  # eq. 7: Y = vτ + zγ


def test_uncertainty_loss_gradient_wrt_log_sigma():
    w = UncertaintyWeighting({"reg": "regression", "cls": "classification"})
    with torch.no_grad():
        w.log_sigma["reg"].fill_(0.3)
        w.log_sigma["cls"].fill_(-0.2)
    losses = {"reg": torch.tensor(2.0), "cls": torch.tensor(0.7)}
    total = w(losses)
    total.backward()
    # d/ds [0.5 e^{-2s} L + s] = 1 - e^{-2s} L ;  d/ds [e^{-2s} L + s] = 1 - 2 e^{-2s} L
    assert w.log_sigma["reg"].grad.item() == pytest.approx(1 - torch.exp(torch.tensor(-0.6)).item() * 2.0, rel=1e-5)
    assert w.log_sigma["cls"].grad.item() == pytest.approx(1 - 2 * torch.exp(torch.tensor(0.4)).item() * 0.7, rel=1e-5)
    expected = 0.5 * torch.exp(torch.tensor(-0.6)) * 2.0 + 0.3 + torch.exp(torch.tensor(0.4)) * 0.7 - 0.2
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert UncertaintyWeighting({"a": "regression"}, "sum")({"a": torch.tensor(3.0)}).item() == 3.0


def _labels(attack, hp):
    n = len(attack)
    return Labels(torch.tensor(attack), torch.zeros(n, dtype=torch.long), torch.tensor(hp),
                  torch.full((n,), -1, dtype=torch.long))


def test_per_attack_regressor_only_learns_from_its_attack():
    head = HyperparameterHead(HeadContext(LABELS, {"attack": 4}, STATS))
    assert head.pairs == [("fgsm", "eps"), ("pgd", "eps"), ("cw", "kappa")]
    batch = _labels([0, 2], [[150.0, float("nan")], [float("nan"), 9.0]])
    out = torch.zeros(2, 3, requires_grad=True)
    loss = head.loss(out, batch)
    loss.backward()
    grad = out.grad
    # example 0 (fgsm) trains only the fgsm column; example 1 (cw) only the κ column
    assert grad[0, 0] != 0 and grad[0, 1] == 0 and grad[0, 2] == 0
    assert grad[1, 2] != 0 and grad[1, 0] == 0 and grad[1, 1] == 0
    z_fgsm, z_cw = (150 - 100) / 50, (9 - 5) / 2
    assert loss.item() == pytest.approx((z_fgsm ** 2 + z_cw ** 2) / 2)
    # answers in display units from the predicted attack's regressor
    values = head.values(torch.tensor([[1.0, -1.0, 0.5], [1.0, -1.0, 0.5]]), torch.tensor([0, 2]))
    assert values.tolist() == pytest.approx([150.0, 6.0])


def test_single_regressor_puts_eps_and_kappa_on_one_scale():
    head = HyperparameterHead(HeadContext(LABELS, {"attack": 4}, STATS, regression="single"))
    batch = _labels([1, 2], [[80.0, float("nan")], [float("nan"), 20.0]])
    truth, mask = head.target(batch)
    assert truth[:, 0].tolist() == [80.0, 20.0] and mask.all()
