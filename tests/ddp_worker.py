"""Started by tests/test_scale_out.py, once alone and once per torchrun worker: trains
as this worker and saves what the worker ended with, so the test can compare workers.

    ddp_worker.py epoch DATA OUT   one epoch of `attribkit train`; OUT.rankR.safetensors: the weights
    ddp_worker.py step DATA OUT    one SGD step on the first 16 training examples with BatchNorm frozen;
                                   OUT.rankR.safetensors: the gradients and the weights after it
"""

import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

from attribkit import Runtime
from attribkit.training import distributed, trainer
from attribkit.training.config import TrainConfig
from attribkit.training.data import load_attribution_data, target_stats
from attribkit.training.models import applicable_heads, build_members, fit_heads

mode, data, out = sys.argv[1:4]
rt = Runtime(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))
config = TrainConfig(epochs=1, width=0.125, input_scale=1, batch_size=16, validation=0.0)
saved = f"{out}.rank{rt.rank}.safetensors"


def state(member, prefix=""):
    named = {f"net.{k}": v for k, v in member.net.state_dict().items()}
    named.update({f"loss.{k}": v for k, v in member.weighting.state_dict().items()})
    return {prefix + k: v.detach().clone().contiguous() for k, v in named.items()}


if mode == "epoch":
    fit = trainer._fit

    def fit_and_save(name, member, *args):
        history = fit(name, member, *args)
        save_file(state(member), saved)
        return history

    trainer._fit = fit_and_save
    trainer.train(data, config, out, runtime=rt)
else:
    with distributed.process_group(rt):
        train = load_attribution_data(data, "train")
        torch.manual_seed(config.seed)
        heads = fit_heads(applicable_heads(train.columns, config), train.labels, train.label_spaces, config)
        (member,) = build_members(config, train.label_spaces, target_stats(train), train.columns,
                                  train.images.shape[1], train.images.shape[-1], heads).values()
        objective = trainer._wrapped(trainer.Objective(member, config.ae_weight), rt)
        objective.train()
        for module in member.net.modules():  # per-worker batch statistics would differ from one process's
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        idx = distributed.my_share(torch.arange(16), rt)
        loss = objective(train.images[idx], train.clean[idx], train.labels.take(idx))
        loss.backward()
        grads = {f"grad.{k}": p.grad.detach().clone() for k, p in member.net.named_parameters() if p.grad is not None}
        torch.optim.SGD(list(member.net.parameters()) + list(member.weighting.parameters()), lr=0.1).step()
        save_file({**grads, **state(member)}, saved)
