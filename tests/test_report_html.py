"""`mtlbench report`: the HTML page, its figures and errors, and the page in headless Chromium."""

import dataclasses
import os
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import small_synthetic_card, tiny_card
from mtlbench.cli import main
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.reporting import ReportError, write_report
from mtlbench.reporting.collect import Setting
from mtlbench.reporting.grid import grid_cases
from mtlbench.store import STORE_NAME, Store
from mtlbench.train import run_trial
from mtlbench.trial import TrialSpec

METHODS = ("tiny", "tinyseg", "tinycls")  # multi-task, segmentation only, classification only
FOLDS = (0, 1, 2)
PAPER_DICE = (81.25, 2.5)
SECTIONS = ["Leaderboard", "Per-fold box plots", "Statistics", "Training curves",
            "Qualitative results"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _plugins():
    loaded = load_plugins()
    tiny = dataclasses.replace(tiny_card(), published={"small": {"Dice": PAPER_DICE}})
    for card in (tiny, tiny_card("tinyseg", ("seg",)), tiny_card("tinycls", ("cls",))):
        loaded.methods.register(card.name, card, owner="tests")
    loaded.datasets.register("small", small_synthetic_card(), owner="tests")
    return loaded


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real small run: three tiny methods, three folds of a 30-case synthetic set, 32²."""
    base = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("MTLBENCH_CACHE", str(base / "cache"))
        plugins = _plugins()
        protocol = get_protocol("smoke", "small", {"epochs": "2", "image_size": "32"})
        run = base / "run"
        with Store.in_run_dir(run) as store:
            for method in METHODS:
                for fold in FOLDS:
                    store.record(run_trial(TrialSpec("small", method, fold, protocol,
                                                     str(run)), plugins))
    return run


@pytest.fixture(scope="module")
def report(run_dir):
    """The report of ``run_dir`` with the test methods' cards (for the paper's numbers)."""
    plugins = _plugins()
    return write_report(run_dir, run_dir / "report", grid=3,
                        methods_registry=plugins.methods, datasets_registry=plugins.datasets)


def test_report_writes_a_page_and_its_figures(report):
    assert report.name == "report.html"
    kinds = sorted(p.name.rsplit("-", 1)[1] for p in (report.parent / "figures").glob("*.png"))
    assert kinds == ["boxplots.png", "curves.png", "qualitative.png"]
    for png in (report.parent / "figures").glob("*.png"):
        with Image.open(png) as image:
            assert image.width > 200 and image.height > 100
            assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas


def test_page_is_self_contained(report):
    text = report.read_text()
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["'](?!data:image/png;base64,|#)""", text)
    assert "url(" not in text and "@import" not in text


def test_page_has_every_section_and_the_papers_numbers(report):
    text = report.read_text()
    assert re.findall(r"<h3>(.*?)</h3>", text) == SECTIONS
    leaderboard = text[text.index('<table class="leaderboard">'):]
    leaderboard = leaderboard[:leaderboard.index("</table>")]
    for method in METHODS:
        assert f'data-method="{method}"' in leaderboard
    assert f"{PAPER_DICE[0]:.2f} ± {PAPER_DICE[1]:.2f}" in leaderboard
    assert leaderboard.count('<td class="paper">–</td>') == 7 * 3 - 1  # all but tiny's Dice
    assert text.count('<img class="figure boxplots"') == 1
    assert text.count('<img class="figure curves"') == 1


def test_statistics_compare_the_methods_that_share_a_metric(report):
    text = report.read_text()
    rows = re.findall(r'data-metric="(\w+)" data-method="(\w+)"', text)
    assert sorted(m for metric, m in rows if metric == "Dice") == ["tiny", "tinyseg"]
    assert sorted(m for metric, m in rows if metric == "ACC") == ["tiny", "tinycls"]
    best_rows = re.findall(r'<tr class="[^"]*\bbest\b', text)
    assert len(best_rows) == len({metric for metric, _ in rows})  # one best per metric
    n_images = 18  # 30 cases, 6 per fold, 3 folds
    assert f"<td>{n_images}</td>" in text


def test_grid_has_input_truth_and_one_column_per_segmenting_method(report):
    text = report.read_text()
    grid = text[text.index('<table class="qualitative">'):]
    grid = grid[:grid.index("</table>")]
    assert len(re.findall(r"<tr data-case=", grid)) == 3
    assert re.findall(r'<th data-method="(\w+)"', grid) == ["tiny", "tinyseg"]
    assert grid.count('<td class="input">') == grid.count('<td class="truth">') == 3
    assert grid.count('<td class="prediction">') == 6
    assert "Not shown (no segmentation): tinycls" in text


def test_grid_cases_alternate_classes_and_spread_over_folds():
    gallery = {f"c{i}": {"label": i % 2, "image": "", "mask": ""} for i in range(12)}
    setting = Setting("ds", "smoke", "h", 32, "strict", rows=[], gallery=gallery,
                      case_folds={f"c{i}": (i // 2) % 3 for i in range(12)},
                      predictions={"m": {f"c{i}": "" for i in range(11)}})  # c11 unpredicted
    cases = grid_cases(setting, 6)
    assert [c.label for c in cases] == [0, 1, 0, 1, 0, 1]
    assert sorted(c.fold for c in cases if c.label == 0) == [0, 1, 2]
    assert "c11" not in [c.case_id for c in grid_cases(setting, 12)]
    assert len(grid_cases(setting, 100)) == 11 and grid_cases(setting, 0) == []


def test_cli_report_and_its_errors(run_dir, tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["report", str(run_dir / STORE_NAME), "--out",
                                str(tmp_path / "out"), "--mode", "paper", "--grid", "2"])
    assert done.exit_code == 0, done.output
    page = Path(done.output.strip().splitlines()[-1])
    assert page == tmp_path / "out" / "report.html" and "paper metrics" in page.read_text()

    missing = runner.invoke(main, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no store at" in missing.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / STORE_NAME).write_bytes(b"")
    empty = runner.invoke(main, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "is empty" in empty.output
    Store.in_run_dir(tmp_path / "fresh").close()
    fresh = runner.invoke(main, ["report", str(tmp_path / "fresh")])
    assert fresh.exit_code == 2 and "no finished trials" in fresh.output
    other = runner.invoke(main, ["report", str(run_dir), "--dataset", "busi", "--out",
                                 str(tmp_path / "o")])
    assert other.exit_code == 2 and "of dataset 'busi'; it has: small" in other.output
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(ReportError, match="junk.sqlite is not a readable mtlbench store"):
        write_report(tmp_path / "junk.sqlite", tmp_path / "j")


def _chromium() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


def _no_browser(reason: str) -> None:
    """Skip with ``reason``; fail instead where CI promised a browser (.ci/run installs one)."""
    if os.environ.get("MTLBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MTLBENCH_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def test_report_in_headless_chromium(report, tmp_path):
    try:
        from playwright import sync_api
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[test]')")
    chromium = _chromium()
    if chromium is None:
        _no_browser("no Chromium at /usr/bin/chromium or on PATH (apt install chromium)")
    outside = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
            headings = page.locator("section h3").all_inner_texts()
            leaderboard = page.locator("table.leaderboard tr[data-method]").count()
            stats_rows = page.locator("table.stats tr[data-metric]").count()
            grid_header = page.locator("table.qualitative tr").first.locator("th")
            grid_columns = grid_header.all_inner_texts()
            shown = page.locator("img.boxplots").bounding_box()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert outside == []
    assert images and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    assert len(images) == 2 + 3 * (2 + 2)  # box plots, curves; 3 cases × (input, GT, 2 masks)
    assert headings == SECTIONS
    assert leaderboard == len(METHODS) and stats_rows > 0
    assert grid_columns == ["case", "input", "ground truth", "tiny", "tinyseg"]
    assert shown is not None and shown["width"] > 300
    with Image.open(shot) as image:
        gray = np.asarray(image.convert("L"))
    assert gray.shape[0] > 900  # the full page, longer than the window
    assert (gray < 200).mean() > 0.02 and gray.std() > 20  # text and figures, not blank


def test_a_store_without_masks_reports_without_a_grid(run_dir, tmp_path):
    copy = tmp_path / STORE_NAME
    source = sqlite3.connect(run_dir / STORE_NAME)
    source.backup(target := sqlite3.connect(copy))
    source.close()
    target.execute("DELETE FROM predictions")
    target.commit()
    target.close()
    text = write_report(copy, tmp_path / "r").read_text()
    assert "No predicted masks in the store" in text and "table class=\"qualitative\"" not in text
    assert '<table class="leaderboard">' in text and '<table class="stats">' in text
