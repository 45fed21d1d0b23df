"""Result and progress files: what cluster jobs leave in the run folder for the driver."""

from __future__ import annotations

import math

from mtlbench.result_files import (
    ProgressReader,
    append_progress,
    ingest,
    progress_path,
    read_result,
    result_files,
    result_path,
    write_result,
)
from mtlbench.store import Store
from mtlbench.trial import TrialResult


def a_result(trial_id="t1", status="finished", dice=0.8, error="") -> TrialResult:
    return TrialResult(
        trial_id=trial_id, dataset="synthetic", method="unet", fold=0, seed=0,
        protocol={"name": "smoke"}, protocol_hash="abc", status=status, error=error,
        image_rows=[{"case_id": "c1", "strict.dice": dice, "strict.hd95": math.nan}],
        fold_metrics={"strict.dice": dice}, curve=[{"epoch": 0, "loss_total": 1.5}],
        env={"slurm": {"job_id": "7_0", "restarts": 1}}, selected_epoch=0)


def test_a_result_file_reads_back_as_the_same_result(tmp_path):
    result = a_result()
    path = write_result(tmp_path, result)
    assert path == result_path(tmp_path, "t1")
    back = read_result(path)
    assert math.isnan(back.image_rows[0].pop("strict.hd95"))
    result.image_rows[0].pop("strict.hd95")
    assert back == result
    assert [p.name for p in path.parent.iterdir()] == ["t1.json"]  # no temporary file left


def test_ingest_stores_each_result_once_and_never_a_failure_over_a_success(tmp_path):
    write_result(tmp_path, a_result("t1"))
    write_result(tmp_path, a_result("t2", "failed", error="RuntimeError: boom"))
    with Store.in_run_dir(tmp_path) as store:
        recorded, problems = ingest(store, tmp_path)
        assert sorted(r.trial_id for r in recorded) == ["t1", "t2"] and problems == []
        assert ingest(store, tmp_path) == ([], [])  # nothing twice
        assert store.statuses() == {"t1": "finished", "t2": "failed"}

        write_result(tmp_path, a_result("t1", "failed", error="a late duplicate job"))
        write_result(tmp_path, a_result("t2", dice=0.7))  # t2 ran again and finished
        recorded, _ = ingest(store, tmp_path)
        assert [r.trial_id for r in recorded] == ["t2"]
        assert store.statuses() == {"t1": "finished", "t2": "finished"}
        assert store.trials()[0]["metrics"]["strict.dice"] == 0.8


def test_an_unreadable_result_file_is_named_and_the_others_still_land(tmp_path):
    write_result(tmp_path, a_result("good"))
    bad = result_path(tmp_path, "bad")
    bad.write_text('{"trial_id": "bad", "status": ')  # cut off
    with Store.in_run_dir(tmp_path) as store:
        recorded, problems = ingest(store, tmp_path)
        assert [r.trial_id for r in recorded] == ["good"]
        assert len(problems) == 1 and str(bad) in problems[0] and "delete it" in problems[0]
    assert len(result_files(tmp_path)) == 2


def test_progress_reader_returns_each_whole_line_once(tmp_path):
    reader = ProgressReader(progress_path(tmp_path, "t1"))
    assert reader.new_events() == []  # no file yet
    append_progress(tmp_path, "t1", {"event": "started", "restarts": 0})
    with open(progress_path(tmp_path, "t1"), "a") as handle:
        handle.write('{"event": "epoch", "rec')  # a line still being written
    assert reader.new_events() == [{"event": "started", "restarts": 0}]
    with open(progress_path(tmp_path, "t1"), "a") as handle:
        handle.write('ord": {"epoch": 0}}\n')
    assert reader.new_events() == [{"event": "epoch", "record": {"epoch": 0}}]
    assert reader.new_events() == []
