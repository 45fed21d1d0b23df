"""Property-based hostile input (hypothesis): random folder datasets (ids, patterns, CSV
shapes, file contents) through `data check`, `data audit` and planning a run, and random
leaderboard JSON through `compare`. Whatever the input: no traceback, exit status 0, 1 or 2,
no file read outside the folders the options name (a sentinel folder beside the data, watched
by an audit hook), and no input file changed. Nothing trains."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mtlbench.cli import USER_ERRORS, main
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.runner import plan_run

BASELINE = Path(__file__).parents[1] / "benchmarks" / "baselines" / "smoke-synthetic.json"
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --- an audit hook that records every file opened inside a watched folder ---------------------

WATCHED: list[str] = []
OPENED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if not WATCHED or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(target))
        if any(path == w or path.startswith(w + os.sep) for w in WATCHED):
            OPENED.append(path)


sys.addaudithook(_audit)  # hooks cannot be removed; it does nothing while WATCHED is empty


def png(size: int = 8, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def mask_png(size: int = 8) -> bytes:
    buf = io.BytesIO()
    mask = np.zeros((size, size), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


# --- strategies -------------------------------------------------------------------------------

ID_TEXT = st.one_of(
    st.sampled_from(["c0", "c1", "../outside/sentinel", "../../outside/sentinel", "/etc/hosts",
                     "sub/c2", "", " ", "{id}", "{0}", "a:x:b", "..", ".", "c1"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)
PATTERN = st.one_of(
    st.sampled_from(["{id}.png", "mask_{id}.png", "{id}", "{id.__class__}", "{0}", "{foo}",
                     "{id", "}{id}", "x.png", "../{id}.png", "/tmp/{id}.png", "{id}{id}.png",
                     "{{id}}.png", "{id!r}.png", "{id:>4}.png"]),
    st.text(st.sampled_from("{}id._/-x0:!"), max_size=10),
)
LABEL = st.sampled_from(["benign", "malignant", "0", "1", "2", "", "Benign", "-1", "x"])
CONTENT = st.sampled_from(["png", "mask", "garbage", "empty", "none", "big"])


@st.composite
def folder_datasets(draw):
    rows = draw(st.lists(st.tuples(ID_TEXT, LABEL, st.integers(0, 3)), max_size=8))
    header = draw(st.sampled_from(["id,label", "id,label,group", "label,id", "name,label",
                                   "", "id;label", "id,label,extra,more"]))
    options = {}
    for key in ("image_pattern", "mask_pattern"):
        if draw(st.booleans()):
            options[key] = draw(PATTERN)
    contents = draw(st.lists(CONTENT, min_size=len(rows), max_size=len(rows)))
    mask_contents = draw(st.lists(CONTENT, min_size=len(rows), max_size=len(rows)))
    return rows, header, options, contents, mask_contents


def write_dataset(root: Path, rows, header, contents, mask_contents) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lines = [header] if header else []
    for (case_id, label, extra), content, mask_content in zip(rows, contents, mask_contents,
                                                              strict=True):
        lines.append(",".join([case_id, label, *(["g"] * extra)]))
        safe = case_id.replace("/", "_").replace("\x00", "")
        if not safe or safe in (".", "..") or len(safe.encode()) > 200:
            continue
        for folder, what in (("images", content), ("masks", mask_content)):
            data = {"png": png(), "mask": mask_png(), "garbage": b"not a png", "empty": b"",
                    "big": png(16), "none": None}[what]
            if data is not None:
                (root / folder / f"{safe}.png").write_bytes(data)
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8",
                                     errors="surrogatepass")


def spec_of(options: dict[str, str]) -> str:
    # the spec's own separators cannot appear in a value; such values are another input
    parts = [f"{k}={v}" for k, v in options.items() if not set(v) & set(",=:")]
    return "folder" + (":" + ",".join(parts) if parts else "")


@SETTINGS
@given(folder_datasets())
def test_random_folder_datasets_never_crash_read_outside_or_change_a_file(dataset):
    rows, header, options, contents, mask_contents = dataset
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        root, outside = tmp / "data", tmp / "outside"
        outside.mkdir()
        (outside / "sentinel.png").write_bytes(png())
        write_dataset(root, rows, header, contents, mask_contents)
        before = snapshot(root)
        spec = spec_of(options)
        WATCHED[:] = [str(outside)]
        OPENED.clear()
        try:
            for command in (["data", "check", spec], ["data", "audit", spec]):
                result = CliRunner().invoke(main, [*command, "--data-root", str(root)])
                assert result.exit_code in (0, 1, 2), (command, result.output)
                assert result.exception is None or isinstance(result.exception, SystemExit), (
                    command, repr(result.exception), result.output)
                assert "Traceback" not in result.output
            protocol = get_protocol("smoke", "folder", {"image_size": "32", "epochs": "1"})
            try:
                plan_run(load_plugins(), ["clsnet"], spec, protocol, tmp / "run", [0],
                         data_root=str(root), cache_dir=str(tmp / "cache"))
            except USER_ERRORS:
                pass  # refused with a message: what bad input must get
        finally:
            WATCHED.clear()
        assert OPENED == [], f"read outside the data folder: {OPENED}"
        assert snapshot(root) == before


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12)
RECORD_KEYS = ["dataset", "method", "protocol_hash", "variant", "mode", "dice_mean",
               "acc_mean", "hd95_mean", "dice_std"]


@st.composite
def leaderboards(draw):
    """A real leaderboard with random edits, or random JSON altogether."""
    if draw(st.booleans()):
        return draw(JSON_VALUE)
    data = json.loads(BASELINE.read_text())
    records = data["strict"]
    for _ in range(draw(st.integers(0, 4))):
        if not records:
            break
        record = records[draw(st.integers(0, len(records) - 1))]
        key = draw(st.sampled_from(RECORD_KEYS))
        if draw(st.booleans()):
            record.pop(key, None)
        else:
            record[key] = draw(JSON_VALUE | st.sampled_from([float("nan"), float("inf"),
                                                             10 ** 400, -1e308, "83.8"]))
    if draw(st.booleans()):
        data = data["strict"]
    return data


@SETTINGS
@given(leaderboards(), leaderboards(), st.sampled_from(
    [[], ["--tolerance", "nan"], ["--tolerance", "0"], ["--tolerance-for", "acc=-1"],
     ["--metrics", "dice,nosuch"], ["--mode", "paper"]]))
def test_random_leaderboards_never_crash_compare_or_change_a_file(current, baseline, args):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for name, data in (("current.json", current), ("baseline.json", baseline)):
            path = tmp / name
            path.write_text(json.dumps(data))  # NaN, inf and 10**400 as JSON writes them
            paths.append(path)
        before = snapshot(tmp)
        result = CliRunner().invoke(main, ["compare", *map(str, paths), *args])
        assert result.exit_code in (0, 1, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            repr(result.exception), result.output)
        assert snapshot(tmp) == before
