"""train.batch_threads: a CPU step's batch in shares, each share's forward and backward in its own thread."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from support import tiny_config

from booksegm.config import ConfigError
from booksegm.training.batch_threads import BatchThreads
from booksegm.training.module import BookSegmModule, OptimConfig


def test_shares_cover_the_batch_in_order_weighted_by_their_images():
    threads = BatchThreads(2)
    try:
        shares = threads.map(lambda images, targets: (images, targets, threading.current_thread().name),
                             [1, 2, 3], ["a", "b", "c"])
        single = threads.map(lambda images, targets: images, [7], ["x"])
    finally:
        threads.close()
    assert [(weight, images, targets) for weight, (images, targets, _) in shares] == [
        (pytest.approx(2 / 3), [1, 2], ["a", "b"]), (pytest.approx(1 / 3), [3], ["c"])]
    assert all(name.startswith("booksegm-step") for _, (_, _, name) in shares)
    assert single == [(1.0, [7])]


def test_shares_run_under_the_callers_autocast():
    threads = BatchThreads(2)
    try:
        def autocast_state(images, targets):
            return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

        with torch.autocast("cpu", dtype=torch.bfloat16):  # what trainer.precision=bf16-mixed sets on the CPU
            assert [state for _, state in threads.map(autocast_state, [1, 2], [1, 2])] == [(True, torch.bfloat16)] * 2
        assert [enabled for _, (enabled, _) in threads.map(autocast_state, [1, 2], [1, 2])] == [False, False]
    finally:
        threads.close()


def test_backward_in_threads_gives_the_gradient_of_the_whole_batch():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3))
    images = [torch.rand(3, 20, 20) for _ in range(4)]
    targets = [torch.rand(1, 16, 16) for _ in range(4)]

    def mean_loss(share_images, share_targets):
        return torch.nn.functional.mse_loss(net(torch.stack(share_images)), torch.stack(share_targets))

    mean_loss(images, targets).backward()
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    threads = BatchThreads(2)
    try:
        threads.backward([weight * loss for weight, loss in threads.map(mean_loss, images, targets)])
    finally:
        threads.close()
    for grad, expected in zip((p.grad for p in net.parameters()), whole):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_batch_threads_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.batch_threads must be >= 1 \(1 = one pass\), got 0"):
        OptimConfig(batch_threads=0).validate()


def fit_recording_threads(datamodule, norm: str) -> tuple[BookSegmModule, set[str], list]:
    """Three steps with train.batch_threads=2: the module, the threads its backbone's forward and
    backward ran in (tagged), its weights before."""
    pl.seed_everything(0)
    module = BookSegmModule(model=asdict(tiny_config(norm=norm)), class_names=["book"],
                            optim={"warmup_steps": 0, "batch_threads": 2})
    before = [p.detach().clone() for p in module.parameters()]
    names: set[str] = set()
    module.model.backbone.register_forward_pre_hook(lambda *_: names.add(threading.current_thread().name))
    first_weight = next(module.model.backbone.parameters())
    first_weight.register_hook(lambda grad: names.add("backward in " + threading.current_thread().name))
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    return module, names, before


def test_a_cpu_fit_runs_each_share_of_the_batch_in_its_own_thread(synthetic_datamodule):
    module, names, before = fit_recording_threads(synthetic_datamodule, norm="group")
    # two images a batch: one each, forward and backward, never the main thread
    assert names == {"booksegm-step_0", "booksegm-step_1", "backward in booksegm-step_0", "backward in booksegm-step_1"}
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))  # the optimizer stepped
    assert module._batch_threads is None  # the threads are gone with the fit


def test_a_threaded_fit_repeats_exactly_with_its_seed(synthetic_datamodule):
    """The shares' samplers draw from torch's one generator in turn, in share order, whatever the threads' timing."""
    first, _, _ = fit_recording_threads(synthetic_datamodule, norm="group")
    second, _, _ = fit_recording_threads(synthetic_datamodule, norm="group")
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_random_draws_take_turns_in_share_order_and_are_restored_after():
    draws = []

    class Sampler:
        def draw(self, image):
            draws.append(image)  # inside the call: only one share at a time is here

    sampler = Sampler()
    original = sampler.draw
    threads = BatchThreads(2, random_draws=((sampler, "draw"),))

    def share(images, targets):
        if images == [1]:
            time.sleep(0.2)  # share 0 comes late: share 1 must wait for it at each draw
        for _ in range(3):
            sampler.draw(images[0])
        return images

    try:
        threads.map(share, [1, 2], ["a", "b"])
    finally:
        threads.close()
    assert draws == [1, 2, 1, 2, 1, 2]
    assert sampler.draw == original


def test_a_failing_share_leaves_its_turns_to_the_others():
    class Sampler:
        def draw(self):
            return 1

    sampler = Sampler()
    threads = BatchThreads(2, random_draws=((sampler, "draw"),))

    def share(images, targets):
        if images == [1]:
            raise ValueError("share 0 fails before its draw")
        return sampler.draw()

    try:
        with pytest.raises(ValueError, match="share 0 fails"):
            threads.map(share, [1, 2], ["a", "b"])
        assert threads.map(lambda images, targets: sampler.draw(), [1, 2], ["a", "b"]) == [(0.5, 1), (0.5, 1)]
    finally:
        threads.close()


def test_a_batchnorm_model_trains_in_one_pass(synthetic_datamodule, caplog):
    with caplog.at_level(logging.INFO, logger="booksegm.training.module"):
        module, names, before = fit_recording_threads(synthetic_datamodule, norm="batch")
    assert names == {threading.main_thread().name, "backward in " + threading.main_thread().name}
    assert "train.batch_threads=2 ignored: this model trains BatchNorm" in caplog.text
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))
