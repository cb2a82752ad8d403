"""hipposeg.training's DDP set-up, the one that training (multi_gpu_train.json) and the BIDS App share."""

from __future__ import annotations

import datetime
import socket

import pytest
import torch


@pytest.fixture
def one_rank(monkeypatch):
    """The environment torchrun gives a process group of one CPU rank."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_init_distributed_joins_one_gloo_group_with_the_given_timeout(one_rank):
    from hipposeg.training import distributed_device, init_distributed

    assert init_distributed(cuda=False, timeout=datetime.timedelta(minutes=3)) == "gloo"
    assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
    assert torch.distributed.get_backend() == "gloo"
    assert init_distributed(cuda=False) == "gloo"  # already joined: a second call changes nothing
    assert distributed_device(cuda=False) == torch.device("cpu")
    flag = torch.tensor(1.0)
    torch.distributed.all_reduce(flag)  # the group works
    assert flag.item() == 1.0


def test_distributed_device_is_the_local_rank_gpu(monkeypatch):
    from hipposeg.training import distributed_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed_device(cuda=True) == torch.device("cuda:3")
    assert distributed_device(cuda=False) == torch.device("cpu")
