"""Multi-stage backward: same gradients as a direct backward (label and tuple batches, inside
Lightning), and the global batch under DDP on 2 CPU processes (gloo)."""

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from retrieval.lightning.multistage import (
    chunks,
    gather_rows,
    gather_rows_with_grad,
    multistage_backward,
)
from retrieval.losses import APLoss, build_loss
from retrieval.models.net import build_net, embed_images

REL = 1e-5


# The spawned DDP workers import this module: Lightning is imported only where it is used.


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """resnet18-GeM, random weights, BatchNorm frozen: deterministic in training mode (float64:
    the comparison checks the algorithm, not float32 summation order)."""
    torch.manual_seed(seed)
    net = build_net("resnet18", "gem").to(dtype).train()
    for m in net.modules():  # as RetrievalModule's freeze_bn
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return net


def label_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images 3 x 40 x 40, half of them padded (valid part 28 x 40), labels in pairs."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 40, 40, generator=g, dtype=torch.float64)
    sizes = torch.tensor([[40, 40]] * n)
    sizes[n // 2 :, 0] = 28
    images[n // 2 :, :, 28:] = 0
    return images, sizes, torch.arange(n) // 2


def gradients(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in net.parameters() if p.grad is not None]


def assert_same_gradients(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Equal to REL relative to the largest entry of each parameter's gradient."""
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=REL * float(b.abs().max()) + 1e-12)


def test_chunks_cover_the_batch():
    assert list(chunks(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    assert list(chunks(7, None)) == [(0, 7)]
    with pytest.raises(ValueError, match="chunk_size"):
        list(chunks(7, 0))


@pytest.mark.parametrize("loss_name", ["ap", "smooth_ap", "contrastive"])
def test_multistage_gives_the_direct_gradients_on_a_label_batch(loss_name):
    net, loss = tiny_net(), build_loss(loss_name)
    images, sizes, labels = label_batch()
    direct = loss.label_loss(net(images, sizes), labels)
    direct.backward()
    expected = gradients(net)
    net.zero_grad()
    staged = multistage_backward(
        lambda a, b: net(images[a:b], sizes[a:b]), len(labels), loss.label_loss, labels, 3
    )
    assert float(staged) == pytest.approx(float(direct.detach()), rel=1e-6)
    assert_same_gradients(gradients(net), expected)


def test_multistage_gives_the_direct_gradients_on_tuples_of_mixed_sizes():
    net, loss = tiny_net(), build_loss("contrastive", margin=0.9)
    g = torch.Generator().manual_seed(2)
    shapes = [(32, 40), (40, 32), (32, 32)]
    images = [
        torch.randn(3, *shapes[i % 3], generator=g, dtype=torch.float64) for i in range(12)
    ]  # 3 tuples of 4

    def tuple_loss(descriptors: torch.Tensor, _: object) -> torch.Tensor:
        t = descriptors.reshape(3, 4, -1)
        return loss.tuple_loss(t[:, 0], t[:, 1], t[:, 2:])

    direct = tuple_loss(embed_images(net, images), None)
    direct.backward()
    expected = gradients(net)
    net.zero_grad()
    staged = multistage_backward(
        lambda a, b: embed_images(net, images[a:b]), 12, tuple_loss, None, 5, gather=False
    )
    assert float(staged) == pytest.approx(float(direct), rel=1e-6)
    assert_same_gradients(gradients(net), expected)


def _ddp_worker(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size
    )
    torch.set_num_threads(1)
    images, sizes, labels = label_batch()
    n = len(labels) // world_size
    mine = slice(rank * n, (rank + 1) * n)
    images, sizes, labels = images[mine], sizes[mine], labels[mine]
    net = tiny_net()
    ddp = DistributedDataParallel(net)
    loss_fn = APLoss()
    # Multi-stage, gathered: every rank's descriptors in the loss, all-reduce at the last chunk.
    staged = multistage_backward(
        lambda a, b: ddp(images[a:b], sizes[a:b]),
        n,
        loss_fn.label_loss,
        labels,
        chunk_size=3,
        no_sync=ddp.no_sync,
    )
    staged_grads = gradients(net)
    net.zero_grad()
    # Direct, gathered with autograd (the path without chunk_size).
    descriptors = gather_rows_with_grad(ddp(images, sizes))
    direct = loss_fn.label_loss(descriptors, gather_rows(labels))
    direct.backward()
    results = {"staged": staged, "direct": direct.detach()}
    results.update(staged_grads=staged_grads, direct_grads=gradients(net))
    torch.save(results, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_ddp_on_two_cpu_processes_sees_the_concatenated_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    net, loss_fn = tiny_net(), APLoss()
    images, sizes, labels = label_batch()
    single = loss_fn.label_loss(net(images, sizes), labels)
    single.backward()
    expected = gradients(net)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("staged", "direct"):
            assert float(out[key]) == pytest.approx(float(single), rel=1e-6), (rank, key)
        assert_same_gradients(out["staged_grads"], expected)
        assert_same_gradients(out["direct_grads"], expected)


def write_class_folders(root, classes: int = 4, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        base = rng.integers(0, 255, (1, 1, 3))
        for i in range(per_class):
            noise = rng.integers(-40, 40, (32 + 8 * (i % 2), 40, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


def one_step(net, images, chunk_size) -> dict[str, torch.Tensor]:
    """Parameters after one SGD step of Lightning on a label batch of 2 classes x 4 images."""
    import pytorch_lightning as pl

    from retrieval.lightning.class_datamodule import ClassBatchConfig, ClassDataModule
    from retrieval.lightning.module import RetrievalModule

    optimizer = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    module = RetrievalModule(copy.deepcopy(net), {"name": "ap"}, optimizer, chunk_size=chunk_size)
    config = ClassBatchConfig(classes_per_batch=2, images_per_class=4, image_size=40)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=ClassDataModule(images, config))
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}


def test_lightning_multistage_step_updates_like_the_direct_step(tmp_path):
    from retrieval.data.classes import load_labelled_images

    write_class_folders(tmp_path / "classes")
    images = load_labelled_images("folders", tmp_path / "classes")
    net = tiny_net(dtype=torch.float32)  # as trained: float32 images from the data module
    before = {k: v.clone() for k, v in net.state_dict().items()}
    direct, staged = one_step(net, images, None), one_step(net, images, 3)
    moved = 0
    for name, start in before.items():
        step_direct, step_staged = direct[name] - start, staged[name] - start
        if start.is_floating_point() and step_direct.abs().max() > 0:
            moved += 1  # float32: compare each parameter's step as a whole
            error = (step_staged - step_direct).norm() / step_direct.norm()
            assert float(error) < 1e-4, name
    assert moved > 10
