"""Training seeds as replicates (`run --seeds`): trial ids, tables, statistics and compare."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_run
from mtlbench.cli import _parse_seeds, main
from mtlbench.compare import compare
from mtlbench.leaderboard_table import build, html_page, markdown
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.report import leaderboard
from mtlbench.reporting.collect import collect
from mtlbench.reporting.html import stats_notes
from mtlbench.reporting.significance import setting_statistics
from mtlbench.results import open_results
from mtlbench.runner import plan_run
from mtlbench.stats import bootstrap_ci, bootstrap_ci_seeds, pooled_mean, pooled_mean_over_seeds
from mtlbench.store import Store
from mtlbench.trial import TrialSpec

METHODS = "unet,clsnet,cunet"


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """unet, clsnet and cunet on fold 0 under two seeds: the protocol's (2) and the next."""
    return tiny_run(tmp_path_factory.mktemp("seeds") / "runs", METHODS, "0",
                    extra=("--seeds", "2"))


def test_the_seed_is_a_replicate_not_a_protocol_setting():
    smoke = get_protocol("smoke")
    # the hash mtlbench 0.2 gave the smoke protocol, when the seed was hashed: kept for the
    # default seed, so earlier trial ids and committed baselines still match
    assert smoke.seed == 2 and smoke.hash == "c73b3948854e"
    assert dataclasses.replace(smoke, seed=7).hash == smoke.hash
    assert dataclasses.replace(smoke, epochs=5).hash != smoke.hash
    ids = {TrialSpec("synthetic", "cunet", 0, dataclasses.replace(smoke, seed=s), "r").trial_id
           for s in (2, 3)}
    assert len(ids) == 2


def test_the_seeds_option_takes_a_count_or_a_list(tmp_path):
    assert _parse_seeds("3", 2) == [2, 3, 4]
    assert _parse_seeds("0,1,2", 2) == [0, 1, 2]
    assert _parse_seeds("5,", 2) == [5]
    assert _parse_seeds("1,1,0", 2) == [1, 0]
    assert _parse_seeds(None, 2) is None
    for bad in ("0", "-1,2", "x", ","):
        with pytest.raises(click.BadParameter, match="count of seeds"):
            _parse_seeds(bad, 2)
    result = CliRunner().invoke(main, ["run", "--seeds", "two", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--seeds" in result.output
    assert not (tmp_path / "r").exists()  # refused before the run folder is made


def test_every_method_fold_and_seed_is_a_trial_of_one_protocol(seeds_run):
    with Store.read(seeds_run) as store:
        trials = store.trials("finished")
    assert sorted((t["method"], t["seed"]) for t in trials) == [
        (m, s) for m in sorted(METHODS.split(",")) for s in (2, 3)]
    assert len({t["protocol_hash"] for t in trials}) == 1
    assert all(t["protocol"]["seed"] == t["seed"] for t in trials)
    dice = {(t["method"], t["seed"]): t["metrics"].get("strict.dice") for t in trials}
    assert dice[("unet", 2)] != dice[("unet", 3)]  # the seed changes training


def test_the_same_command_resumes_and_a_larger_count_adds_only_the_new_seed(seeds_run):
    result = CliRunner().invoke(main, [
        "run", "--methods", METHODS, "--folds", "0", "--set", "image_size=32", "--set",
        "epochs=1", "--set", "precision=fp32", "--device", "cpu", "--out", str(seeds_run),
        "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "0 trial(s) to run, 6 already finished" in " ".join(result.output.split())
    protocol = get_protocol("smoke", "synthetic", {"image_size": "32", "epochs": "1",
                                                   "precision": "fp32"})
    plan = plan_run(load_plugins(), METHODS.split(","), "synthetic", protocol, seeds_run, [0],
                    seeds=[2, 3, 4])
    assert len(plan.done) == 6 and sorted({s.seed for s in plan.specs}) == [4]
    assert all(s.label.endswith("· seed 4") for s in plan.specs)


def test_a_row_pools_its_folds_and_seeds(seeds_run):
    with Store.read(seeds_run) as store:
        rows, trials = leaderboard(store), store.trials("finished")
    for row in rows:
        values = np.array([t["metrics"]["strict.dice"] for t in trials
                           if t["method"] == row.method and "strict.dice" in t["metrics"]])
        assert row.seeds == [2, 3] and row.folds == [0] and row.trials == 2
        if row.method == "clsnet":
            assert "Dice" not in row.metrics
            continue
        assert row.metrics["Dice"] == pytest.approx((values.mean() * 100, values.std() * 100))
        # one fold: the spread of the seeds' means is the spread of the trials
        assert row.seed_std["Dice"] == pytest.approx(values.std() * 100)
    table = build(rows)
    (section,) = table.sections
    assert section.columns[-3:] == ["Folds", "Seeds", "Precision"] and "Δm (%)" in section.columns
    assert all(cells[-2] == "2" for cells in section.cells)
    assert all("±" in cells[1] for cells, row in zip(section.cells, rows, strict=True)
               if row.method != "clsnet")


def _hand_delta_m(rows) -> float:
    """Δm of cunet, computed here from the rows' means (Maninis et al. 2019)."""
    by = {r.method: {c: m for c, (m, _) in r.metrics.items()} for r in rows}
    terms = []
    for column, ref, sign in (("Dice", "unet", 1), ("Jaccard", "unet", 1), ("HD95", "unet", -1),
                              ("ASD", "unet", -1), ("ACC", "clsnet", 1), ("PRE", "clsnet", 1),
                              ("REC", "clsnet", 1)):
        terms.append(sign * (by["cunet"][column] - by[ref][column]) / by[ref][column])
    return 100 * sum(terms) / 7


def test_delta_m_is_the_hand_computation_in_every_table(seeds_run):
    with Store.read(seeds_run) as store:
        rows = leaderboard(store)
    cunet = next(r for r in rows if r.method == "cunet")
    hand = _hand_delta_m(rows)
    assert cunet.delta_m == pytest.approx(hand)
    assert all(r.delta_m is None for r in rows if r.method != "cunet")
    text = markdown(build(rows))
    assert f"| {hand:+.2f} |" in text and "Maninis et al. 2019" in text
    assert "segmentation unet, classification clsnet" in text
    assert f"<td>{hand:+.2f}</td>" in html_page(build(rows))
    with open_results(seeds_run) as run:
        board = run.leaderboard().set_index("method")
    assert board.loc["cunet", "delta_m"] == pytest.approx(hand)
    assert board.loc["cunet", "seeds"] == 2 and board.loc["cunet", "trials"] == 2
    result = CliRunner().invoke(main, ["leaderboard", "--out", str(seeds_run), "--format",
                                       "json"])
    record = next(r for r in json.loads(result.stdout) if r["method"] == "cunet")
    assert record["delta_m"] == pytest.approx(hand) and record["seed_list"] == [2, 3]


def test_delta_m_without_its_reference_says_which_method_to_add(seeds_run):
    result = CliRunner().invoke(main, ["leaderboard", "--out", str(seeds_run), "--format",
                                       "markdown", "--delta-ref", "cls=mycls"])
    assert result.exit_code == 0, result.output
    assert "the classification reference mycls did not run under this protocol: add mycls to " \
           "--methods" in " ".join(result.output.split())
    assert "| – |" in result.output
    result = CliRunner().invoke(main, ["leaderboard", "--out", str(seeds_run),
                                       "--delta-ref", "det=unet"])
    assert result.exit_code == 2 and "seg=METHOD,cls=METHOD" in result.output


def _trial(method, tasks, metrics, env=None, variant=""):
    return {"dataset": "d", "protocol_hash": "h", "protocol_name": "p", "method": method,
            "knobs": {"k": 1} if variant else {}, "variant": variant, "fold": 0, "seed": 2,
            "metrics": metrics, "profile": {}, "protocol": {}, "timing": {},
            "env": {"tasks": tasks, **(env or {})}}


def test_delta_m_against_fabricated_rows():
    """Hand numbers: the gain is the mean of the seven signed relative changes."""
    from mtlbench.report import rows_from_trials

    seg = {"strict.dice": 0.5, "strict.jaccard": 0.4, "strict.hd95": 10.0, "strict.asd": 2.0}
    cls = {"cls.acc": 0.8, "cls.pre": 0.8, "cls.rec": 0.5}
    both = {"strict.dice": 0.55, "strict.jaccard": 0.4, "strict.hd95": 8.0, "strict.asd": 2.0,
            "cls.acc": 0.8, "cls.pre": 0.6, "cls.rec": 0.5}
    refs = {"references": {"seg": "s", "cls": "c"}}
    trials = [_trial("s", ["seg"], seg, {"reference_for": ["seg"]}),
              _trial("c", ["cls"], cls, {"reference_for": ["cls"]}),
              _trial("m", ["cls", "seg"], both, refs)]
    rows = {r.method: r for r in rows_from_trials(trials)}
    # Dice +10 %, HD95 20 % lower (+20 %), PRE -25 %, the rest unchanged: (10 + 20 - 25) / 7
    assert rows["m"].delta_m == pytest.approx(5 / 7)
    # the reference with other knobs is not the reference: Δm needs the default one
    trials[0] = _trial("s", ["seg"], seg, {"reference_for": ["seg"]}, variant="k=1")
    rows = {r.method: r for r in rows_from_trials(trials)}
    assert rows["m"].delta_m is None and rows["m"].delta_m_missing == ("seg",)
    # trials stored before they recorded their references: the note asks for --delta-ref
    old = [_trial("m", ["cls", "seg"], both)]
    (row,) = rows_from_trials(old)
    (section,) = build([row]).sections
    assert any("name one with --delta-ref seg=METHOD" in n for n in section.notes)


def test_statistics_pair_each_images_mean_over_the_seeds(seeds_run):
    with Store.read(seeds_run) as store:
        (setting,) = collect(store)
        trials = [t for t in store.trials("finished") if t["method"] == "unet"]
        per_seed = {t["seed"]: store.image_metrics(t["trial_id"]) for t in trials}
    assert setting.seeds == [2, 3]
    dice = setting.per_image("Dice")["unet"]
    case = next(iter(dice))
    assert dice[case] == pytest.approx(
        100 * np.mean([per_seed[s][case]["strict.dice"] for s in (2, 3)]))
    stats = {s.column: s for s in setting_statistics(setting)}
    mean = stats["Dice"].means["unet"]
    assert mean.n == len(dice) and mean.low <= mean.mean <= mean.high
    assert mean.mean == pytest.approx(np.mean(list(dice.values())))
    assert "two-stage" in stats_notes(setting) and "do not include" not in stats_notes(setting)


def test_the_two_stage_bootstrap():
    rng = np.random.default_rng(1)
    x = rng.normal(70, 10, size=80)
    assert bootstrap_ci_seeds(x[None, :]) == bootstrap_ci(x)
    values = {f"c{i}": float(v) for i, v in enumerate(x)}
    assert pooled_mean_over_seeds({2: values}) == pooled_mean(values)
    same = bootstrap_ci_seeds(np.stack([x, x, x]))
    spread = bootstrap_ci_seeds(np.stack([x - 6, x, x + 6]))  # a seed shifts every image
    assert spread[1] - spread[0] > same[1] - same[0]
    assert spread[0] < x.mean() < spread[1]
    gappy = np.stack([x, x + 1])
    gappy[0, :10] = np.nan  # an image one seed lacks still counts, with the other seed
    assert pooled_mean_over_seeds({s: {f"c{i}": v for i, v in enumerate(row)}
                                   for s, row in enumerate(gappy)}).n == 80


def _record(dice, seed_std=None):
    return {"dataset": "d", "method": "m", "variant": "", "protocol_hash": "h",
            "dice_mean": dice, "dice_seed_std": seed_std}


def test_compare_can_count_a_drop_within_the_seed_spread_as_noise():
    before, now = [_record(80.0)], [_record(78.5, seed_std=1.0)]
    assert compare(now, before, ("dice",), 1.0)[0].regression
    within = compare(now, before, ("dice",), 1.0, seed_sigma=2.0)[0]
    assert not within.regression and within.verdict == "ok (within 2 seed std)"
    assert compare(now, before, ("dice",), 1.0, seed_sigma=1.0)[0].regression
    assert compare([_record(78.5)], before, ("dice",), 1.0, seed_sigma=2.0)[0].regression
    assert not compare([_record(79.5)], before, ("dice",), 1.0, seed_sigma=0.0)[0].regression


def test_compare_seed_sigma_on_the_command_line(seeds_run, tmp_path):
    result = CliRunner().invoke(main, ["compare", str(seeds_run), str(seeds_run),
                                       "--seed-sigma", "2"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["compare", str(seeds_run), str(seeds_run),
                                       "--seed-sigma", "-1"])
    assert result.exit_code == 2 and "--seed-sigma" in result.output


def test_the_leaderboard_command_does_not_import_torch(seeds_run):
    code = ("import sys; from mtlbench.cli import main\n"
            "try:\n"
            f"    main(['leaderboard', '--out', {str(seeds_run)!r}], standalone_mode=False)\n"
            "finally:\n"
            "    print('torch loaded' if 'torch' in sys.modules else 'no torch')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch") and "cunet" in out.stdout


def test_the_report_shows_seeds_and_delta_m(seeds_run, tmp_path):
    from mtlbench.reporting import write_report

    plugins = load_plugins()
    page = write_report(seeds_run, tmp_path / "report", methods_registry=plugins.methods,
                        datasets_registry=plugins.datasets).read_text()
    assert "Δm (%)" in page and "two-stage" in page and "Seeds" in page
    assert "a fold of one training seed" in page
