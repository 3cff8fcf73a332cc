import torch

from attribkit import plugins


def test_sign_noise_is_registered_and_exactly_eps_in_size():
    plugins.reset()
    spec = plugins.get("attacks", "sign_noise")
    x = torch.full((4, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    small, large = spec.run(None, x, torch.zeros(4, dtype=torch.long), [{"eps": 10 / 255}, {"eps": 80 / 255}], {})
    assert torch.allclose((small - x).abs(), torch.full_like(x, 10 / 255))
    assert torch.equal(torch.sign(small - x), torch.sign(large - x))  # one draw, scaled per ε
    assert (large > x).any() and (large < x).any()
