"""The one atomic writer every file of mtlbench goes through."""

import os

import pytest

from mtlbench.files import (
    atomic_writer,
    remove_stale_temps,
    temp_files,
    temp_path,
    write_bytes_atomically,
    write_text_atomically,
)


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomically(tmp_path / "a" / "splits.json", "old")
    with pytest.raises(RuntimeError), atomic_writer(path, "w") as handle:
        handle.write("half of the new")
        assert temp_files(path) == [temp_path(path)]  # written beside it, not over it
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert temp_files(path) == []


def test_text_and_bytes_land_whole(tmp_path):
    assert write_text_atomically(tmp_path / "t.md", "Dice ± std").read_text(
        encoding="utf-8") == "Dice ± std"
    assert write_bytes_atomically(tmp_path / "f.png", b"\x89PNG").read_bytes() == b"\x89PNG"


def test_temporaries_of_a_dead_writer_are_removed_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "leaderboard.json"
    mine = temp_path(target)  # this process: alive
    dead = target.with_name(f".{target.name}.999999999.tmp")  # no such pid
    for leftover in (mine, dead):
        leftover.write_text("partial")
    assert sorted(temp_files(target)) == sorted([mine, dead])
    remove_stale_temps(tmp_path, ".leaderboard.json.*.tmp")
    assert temp_files(target) == [mine] and str(os.getpid()) in mine.name
