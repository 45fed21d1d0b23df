"""`mtlbench compare`: a CI gate that fails on a planted regression and passes without one;
and the HTML leaderboard of the same run."""

import json

import pytest
from click.testing import CliRunner

from conftest import tiny_run
from mtlbench.cli import main
from mtlbench.compare import Difference, compare, load_records


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A real two-method, two-fold run (seconds at 32²)."""
    return tiny_run(tmp_path_factory.mktemp("compare") / "run", "clsnet,fcn", "0,1")


def baseline_with(run_folder, tmp_path, change):
    """The run's own leaderboard.json, edited by ``change(records)``, as a baseline file."""
    data = json.loads((run_folder / "leaderboard.json").read_text())
    change(data["strict"])
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(data))
    return path


def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_identical_leaderboards_pass(run_folder, tmp_path):
    result = invoke(run_folder, run_folder / "leaderboard.json")
    assert result.exit_code == 0, result.output
    assert "No regression" in result.output


def test_a_planted_regression_fails_and_is_named(run_folder, tmp_path):
    def better_baseline(records):
        fcn = next(r for r in records if r["method"] == "fcn")
        fcn["dice_mean"] += 10.0  # the baseline was 10 points better: current regressed

    result = invoke(run_folder, baseline_with(run_folder, tmp_path, better_baseline),
                    "--format", "markdown")
    assert result.exit_code == 1, result.output
    assert "| fcn | dice |" in result.output and "**REGRESSION**" in result.output
    assert "1 regression(s)" in result.output


def test_within_tolerance_and_per_metric_tolerances(run_folder, tmp_path):
    def slightly_better(records):
        for r in records:
            if r["method"] == "fcn":
                r["dice_mean"] += 0.5
                r["hd95_mean"] -= 3.0  # lower is better: the baseline's HD95 was 3 px better

    baseline = baseline_with(run_folder, tmp_path, slightly_better)
    assert invoke(run_folder, baseline).exit_code == 1  # HD95 worse by 3 px > 1
    assert invoke(run_folder, baseline, "--tolerance-for", "hd95=5").exit_code == 0


def test_a_method_missing_from_the_current_run_is_a_regression(run_folder, tmp_path):
    def ghost(records):
        records.append({**records[0], "method": "ghost"})

    result = invoke(run_folder, baseline_with(run_folder, tmp_path, ghost), "--format", "json")
    assert result.exit_code == 1
    verdicts = {(d["method"], d["verdict"]) for d in json.loads(result.stdout)}
    assert ("ghost", "REGRESSION (missing)") in verdicts
    assert ("fcn", "ok") in verdicts


def test_other_protocol_is_not_comparable_and_said_so(run_folder, tmp_path):
    def other_protocol(records):
        for r in records:
            r["protocol_hash"] = "000000000000"

    result = invoke(run_folder, baseline_with(run_folder, tmp_path, other_protocol))
    assert result.exit_code == 1
    assert "not comparable" in result.output and "baseline protocol 000000000000" in result.output


def test_a_baseline_of_another_precision_is_compared_and_the_difference_noted(run_folder,
                                                                              tmp_path):
    """An AMX machine's bf16 baseline against this run: the same protocol, so compared."""
    def from_an_amx_machine(records):
        for r in records:
            r["precision"] = "bf16" if r["precision"] == "fp32" else "fp32"

    result = invoke(run_folder, baseline_with(run_folder, tmp_path, from_an_amx_machine))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "fcn on synthetic: baseline bf16, current fp32 precision" in text
    assert "No regression" in text

    def from_before_issue_16(records):  # leaderboards then had no precision: nothing to say
        for r in records:
            r.pop("precision")

    result = invoke(run_folder, baseline_with(run_folder, tmp_path, from_before_issue_16))
    assert result.exit_code == 0 and "precision" not in result.output


@pytest.mark.parametrize("args, message", [
    (["nowhere", "nowhere"], "no such run folder"),
    (["{run}", "{run}", "--metrics", "dice,speed"], "unknown metric(s) speed"),
    (["{run}", "{run}", "--tolerance-for", "hd95"], "expected METRIC=VALUE"),
])
def test_bad_inputs_exit_2_with_a_clear_message(run_folder, args, message):
    result = invoke(*(a.format(run=run_folder) for a in args))
    assert result.exit_code == 2 and message in result.output


def test_store_and_json_give_the_same_records(run_folder):
    from_store = load_records(run_folder)
    from_json = load_records(run_folder / "leaderboard.json")
    assert from_store == from_json
    assert all(not d.regression for d in compare(from_store, from_json))


def test_direction_of_each_metric():
    worse_dice = Difference("d", "m", "h", "dice", 80.0, 78.0, 1.0)
    worse_hd95 = Difference("d", "m", "h", "hd95", 10.0, 12.0, 1.0)
    better_hd95 = Difference("d", "m", "h", "hd95", 10.0, 5.0, 1.0)
    assert worse_dice.regression and worse_hd95.regression and not better_hd95.regression
    assert Difference("d", "m", "h", "acc", None, 70.0, 1.0).verdict == "new"


def test_html_leaderboard_of_the_same_run_is_a_complete_table(run_folder):
    """`leaderboard --format html`: one table, a header row and a row per method, escaped."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.tables, self.scripts = [], 0, 0

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            self.tables += tag == "table"
            self.scripts += tag in ("script", "link", "img")

        def handle_data(self, data):
            if self.rows and self.lasttag in ("td", "th") and data.strip():
                self.rows[-1].append(data.strip())

    result = CliRunner().invoke(main, ["leaderboard", "--out", str(run_folder), "--format",
                                       "html"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>")
    parser = Cells()
    parser.feed(result.stdout)
    assert parser.tables == 1 and parser.scripts == 0  # self-contained
    header, *body = parser.rows
    assert header[:3] == ["Method", "Dice", "Jaccard"] and header[-3:] == ["Folds", "Seeds",
                                                                              "Precision"]
    assert sorted(r[0] for r in body) == ["clsnet", "fcn"]
    assert all(len(r) == len(header) for r in body)
    fcn = next(r for r in body if r[0] == "fcn")
    assert "±" in fcn[1] and fcn[-3:] == ["2", "1", "fp32"]  # the run folder's trials ask for fp32
