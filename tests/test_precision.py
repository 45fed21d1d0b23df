"""Precision chosen by the hardware: bf16 only where the device runs it natively, recorded with
every result, out of the trial's identity, and a warning for bf16 asked where it is emulated."""

import json
import os
import subprocess
import sys

import pytest

from mtlbench import precision
from mtlbench.precision import cpu_bf16_support, precision_record, resolve
from mtlbench.protocol import ProtocolError, get_protocol
from mtlbench.report import leaderboard, to_records
from mtlbench.store import Store
from mtlbench.train import run_trial
from mtlbench.trial import TrialSpec

AMX_CPU = {"architecture": "x86_64", "amx_bf16": True, "avx512_bf16": True, "avx2": True}
AVX512_BF16_CPU = {"architecture": "x86_64", "amx_bf16": False, "avx512_bf16": True}
AVX2_CPU = {"architecture": "x86_64", "amx_bf16": False, "avx512_bf16": False, "avx2": True}
#: torch's and oneDNN's instruction sets capped to AVX2 (benchmarks/README.md): an AMX machine
#: then behaves as an AVX2-only one.
AVX2_EMULATION = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.parametrize(("caps", "aten", "onednn", "native", "why"), [
    (AMX_CPU, "AVX512", "", True, "AMX_BF16"),
    (AVX512_BF16_CPU, "AVX512", "", True, "AVX512_BF16"),
    (AMX_CPU, "AVX512", "AVX512_CORE_AMX", True, "AMX_BF16"),
    (AVX2_CPU, "AVX2", "", False, "neither AMX nor AVX512-BF16"),
    (AMX_CPU, "AVX2", "", False, "ATEN_CPU_CAPABILITY"),  # torch's kernels capped
    (AMX_CPU, "AVX512", "AVX2", False, "ONEDNN_MAX_CPU_ISA"),  # oneDNN's convolutions capped
    (AMX_CPU, "AVX512", "avx512_core", False, "ONEDNN_MAX_CPU_ISA"),  # AVX-512 without bf16
    ({"architecture": "arm64", "bf16": True}, "DEFAULT", "", False, "arm64"),
])
def test_native_bf16_needs_the_hardware_and_no_cap_on_torch_or_onednn(caps, aten, onednn,
                                                                     native, why):
    decision = cpu_bf16_support(caps, aten, onednn, onednn_available=True)
    assert decision.native is native
    assert why in decision.reason


def test_without_onednn_bf16_is_not_native():
    assert not cpu_bf16_support(AMX_CPU, "AVX512", "", onednn_available=False).native


def test_auto_follows_the_device_and_explicit_values_are_kept():
    native = precision.bf16_support("cpu").native
    assert resolve("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve("fp32", "cpu") == "fp32" and resolve("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve("fp16", "cpu")


def _in_emulation(code: str) -> str:
    env = {**os.environ, **AVX2_EMULATION}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_avx2_emulation_is_seen_as_a_cpu_without_native_bf16():
    """On an AMX machine as on an AVX2 one: auto picks fp32 and an explicit bf16 warns, saying
    how much slower it will be, before any training."""
    out = json.loads(_in_emulation(
        "import json; from mtlbench import precision as p; from mtlbench.runner import "
        "check_precision; from mtlbench.protocol import get_protocol\n"
        "w = check_precision(get_protocol('smoke', overrides={'precision': 'bf16'}), 'cpu')\n"
        "auto = check_precision(get_protocol('smoke'), 'cpu')\n"
        "print(json.dumps({'auto': p.resolve('auto', 'cpu'), 'cpu': p.cpu_description(),"
        " 'warnings': w, 'auto_warnings': auto, 'kind': p.cpu_kind()}))"))
    assert out["auto"] == "fp32" and out["auto_warnings"] == []
    assert out["cpu"]["bf16_native"] is False and out["cpu"]["capability"] == "AVX2"
    assert out["kind"] == "avx2"
    [warning] = out["warnings"]
    assert "precision=bf16" in warning and "25× slower" in warning and "auto" in warning


def test_precision_is_not_part_of_the_trial_identity():
    hashes = {get_protocol("smoke", "synthetic", {"precision": value}).hash
              for value in ("auto", "fp32", "bf16")}
    assert len(hashes) == 1
    with pytest.raises(ProtocolError, match="precision"):
        get_protocol("smoke", overrides={"precision": "fp16"})


def test_record_names_one_precision_or_mixed_with_the_epochs_of_each():
    same = precision_record("auto", "cpu", ["fp32", "fp32"], "fp32")
    assert same["used"] == "fp32" and "epochs" not in same and same["requested"] == "auto"
    mixed = precision_record("auto", "cpu", ["bf16", "fp32", "fp32"], "fp32")
    assert mixed["used"] == "mixed" and mixed["epochs"] == {"bf16": 1, "fp32": 2}


def _spec(tmp_path, fold=0, value="auto", epochs=2):
    protocol = get_protocol("smoke", "small", {"epochs": str(epochs), "image_size": "32",
                                               "precision": value})
    return TrialSpec("small", "tiny", fold, protocol, str(tmp_path / "run"))


def test_each_result_records_its_precision_and_cpu(tmp_path, plugins):
    result = run_trial(_spec(tmp_path), plugins)
    used = resolve("auto", "cpu")
    assert result.env["precision"]["used"] == used
    assert result.env["precision"]["requested"] == "auto"
    assert result.protocol["precision"] == "auto"  # what was asked; env says what ran
    cpu = result.env["cpu"]
    assert cpu["model"] and cpu["capability"] == precision.cpu_description()["capability"]
    assert cpu["bf16_native"] is precision.bf16_support("cpu").native


def test_a_trial_resumed_in_another_precision_says_mixed(tmp_path, plugins):
    """Precision is not in the trial id, so a trial started where bf16 is native and resumed
    where it is not continues from its checkpoint; its result says so."""
    first = _spec(tmp_path, value="bf16", epochs=3)

    def stop_after_epoch_0(_spec, record):
        if record["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(first, plugins, on_epoch=stop_after_epoch_0)
    resumed = run_trial(_spec(tmp_path, value="fp32", epochs=3), plugins)
    assert resumed.trial_id == first.trial_id and resumed.resumed_from_epoch == 0
    record = resumed.env["precision"]
    assert record["used"] == "mixed" and record["epochs"] == {"bf16": 1, "fp32": 2}
    assert record["evaluation"] == "fp32"


def test_leaderboard_row_says_mixed_when_its_folds_differ(tmp_path, plugins):
    run_dir = tmp_path / "run"
    with Store.in_run_dir(run_dir) as store:
        store.record(run_trial(_spec(tmp_path, 0, "fp32", epochs=1), plugins))
        store.record(run_trial(_spec(tmp_path, 1, "fp32", epochs=1), plugins))
        [row] = leaderboard(store)
        assert row.precision == "fp32"
        store.record(run_trial(_spec(tmp_path, 2, "bf16", epochs=1), plugins))
        [row] = leaderboard(store)
        assert row.precision == "mixed" and row.folds == [0, 1, 2]
        assert to_records([row])[0]["precision"] == "mixed"


def test_trials_stored_before_precision_was_recorded_show_their_protocols_value():
    from mtlbench.report import trial_precision

    old = {"env": {"device": "cpu"}, "protocol": {"precision": "bf16"}}
    assert trial_precision(old) == "bf16"
    assert trial_precision({"env": {}, "protocol": {}}) == "unknown"


def test_run_warns_before_training_when_bf16_is_asked_where_it_is_emulated(tmp_path):
    """`mtlbench run --set precision=bf16` under the AVX2 emulation: the warning with the
    expected slow-down is printed, the run goes on in bf16 and records it."""
    env = {**os.environ, **AVX2_EMULATION}
    done = subprocess.run(
        [sys.executable, "-m", "mtlbench", "run", "--methods", "clsnet", "--folds", "0",
         "--set", "epochs=1", "--set", "image_size=32", "--set", "precision=bf16",
         "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    err = " ".join(done.stderr.split())
    assert "warning: precision=bf16 on cpu" in err and "25× slower" in err
    out = " ".join(done.stdout.split())
    assert "bf16 forward" in out
    with Store.in_run_dir(tmp_path / "run") as store:
        [trial] = store.trials()
    assert trial["env"]["precision"]["used"] == "bf16"
    assert trial["env"]["precision"]["bf16_native"] is False


def test_a_folder_with_trials_under_the_pre_precision_hash_is_told_so(tmp_path, plugins):
    """A store written when precision was in the protocol hash: its rows stay, and a run on
    the folder says that they are not reused, naming both hashes."""
    from dataclasses import replace

    from mtlbench.runner import plan_run

    spec = _spec(tmp_path, epochs=1)
    old = replace(run_trial(spec, plugins), trial_id="0ld0ld0ld0ld0ld0",
                  protocol_hash="0ld0ld0ld0ld")  # what an earlier version stored
    old.protocol["precision"] = "bf16"
    with Store.in_run_dir(tmp_path / "run") as store:
        store.record(old)
    plan = plan_run(plugins, ["tiny"], "small", spec.protocol, tmp_path / "run", folds=[0])
    [note] = plan.warnings
    assert "older hash 0ld0ld0ld0ld" in note and spec.protocol.hash in note
    assert [s.trial_id for s in plan.specs] == [spec.trial_id]  # not reused: trained anew
    with Store.in_run_dir(tmp_path / "run") as store:
        assert [row.protocol_hash for row in leaderboard(store)] == ["0ld0ld0ld0ld"]
