"""CheckpointWriter: snapshots written in the background, one at a time."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mtlbench.checkpointing import CheckpointWriter, host_copy


class SlowDisk:
    """A write function that holds each write until released, and keeps what it got."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.payloads: list[dict] = []

    def __call__(self, payload: dict) -> None:
        self.started.set()
        self.release.wait(10)
        self.payloads.append(payload)


def test_the_snapshot_is_taken_at_the_offer_not_when_written():
    disk = SlowDisk()
    weights = torch.zeros(3)
    writer = CheckpointWriter(disk)
    assert writer.offer(lambda: {"model": {"w": weights}, "curve": [{"epoch": 0}]})
    weights.add_(1)  # training goes on changing its tensors in place
    disk.release.set()
    writer.close()
    assert torch.equal(disk.payloads[0]["model"]["w"], torch.zeros(3))


def test_an_epoch_that_ends_during_a_write_skips_its_checkpoint():
    disk = SlowDisk()
    writer = CheckpointWriter(disk)
    asked = []
    assert writer.offer(lambda: asked.append(1) or {"epoch": 1})
    disk.started.wait(10)
    assert not writer.offer(lambda: asked.append(2) or {"epoch": 2})  # busy: not even copied
    disk.release.set()
    writer.close()
    assert asked == [1] and writer.skipped == 1 and writer.written == 1
    assert writer.offer(lambda: {"epoch": 3})  # free again
    writer.close()
    assert [p["epoch"] for p in disk.payloads] == [1, 3]


def test_the_interval_spaces_checkpoints_out_from_the_start():
    written = []
    writer = CheckpointWriter(written.append, min_interval_s=0.3)
    assert not writer.offer(lambda: {"epoch": 0})  # 0.3 s have not passed since the start
    time.sleep(0.35)
    assert writer.offer(lambda: {"epoch": 1})
    writer.close()
    assert not writer.offer(lambda: {"epoch": 2})
    assert [p["epoch"] for p in written] == [1]


def test_a_failed_write_is_raised_in_the_training_thread():
    def full_disk(payload):
        raise OSError(28, "No space left on device")

    writer = CheckpointWriter(full_disk)
    writer.offer(lambda: {"epoch": 0})
    with pytest.raises(OSError, match="No space left"):
        writer.close()


def test_host_copy_copies_tensors_inside_containers():
    t = torch.ones(2)
    copy = host_copy({"a": [t, (t, 1)], "b": "x"})
    t.zero_()
    assert torch.equal(copy["a"][0], torch.ones(2)) and copy["a"][1][1] == 1
    assert isinstance(copy["a"][1], tuple) and copy["b"] == "x"
