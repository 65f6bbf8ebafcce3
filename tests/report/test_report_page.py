"""``fulmen report`` on a real short run: the page and its PNGs are checked as files (every
image decodes to a PNG, the hyperparameters and checkpoints are on the page, nothing is
fetched from the network), and as a person sees it: headless Chromium renders the page
and the screenshot must show the three curves' colours where the figures are."""

from __future__ import annotations

import base64
import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import numpy as np  # noqa: E402
from report_helpers import HPARAMS, short_run  # noqa: E402

from fulmen.cli import main as fulmen_cli  # noqa: E402
from fulmen.report.plots import PALETTE  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_run")
    run_dir, checkpoint = short_run(root)
    assert fulmen_cli(["report", str(run_dir)]) == 0  # as a user runs it
    return run_dir, checkpoint, run_dir / "report" / "index.html"


def decode(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):], validate=True)


def test_page_inlines_valid_pngs_hyperparameters_and_checkpoints(report):
    import matplotlib.image

    run_dir, checkpoint, index = report
    page = PageParser()
    page.feed(index.read_text(encoding="utf-8"))
    text = " ".join(page.text)

    # One figure per group, each a real PNG inlined in the page and written beside it.
    alts = [img["alt"] for img in page.images]
    assert [a.split(":")[0] for a in alts] == ["Training curves", "Validation curves", "Learning rates"]
    assert "train_loss" in alts[0] and "val_loss" in alts[1] and "lr-SGD" in alts[2]
    for img, name in zip(page.images, ("train", "val", "lr")):
        data = decode(img["src"])
        assert data.startswith(PNG_MAGIC) and data == (index.parent / f"{name}.png").read_bytes()
        pixels = matplotlib.image.imread(index.parent / f"{name}.png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert not [link for link in page.links if "://" in link]  # self-contained: nothing to fetch

    # The hyperparameters, and the two checkpoints ModelCheckpoint kept, the best marked.
    assert "0.0375" in text and "features" in text
    kept = sorted(Path(p).name for p in checkpoint.best_k_models)
    assert len(kept) == 2 and all(name in text for name in kept)
    best = Path(checkpoint.best_model_path).name
    assert f'<span class="best">{best}</span>' in index.read_text(encoding="utf-8")
    assert f"{checkpoint.best_model_score.item():.5g}" in text
    assert HPARAMS["lr"] == 0.0375


def test_learning_rate_figure_shows_the_schedule(report):
    from fulmen.report.run import read_run

    run = read_run(report[0])
    lrs = [v for _, v in run.metrics["lr-SGD"]]
    assert lrs[0] == pytest.approx(0.0375) and lrs[-1] < lrs[0] / 8  # StepLR halved it 5 times
    assert [s for s, _ in run.metrics["train_loss"]] == list(range(1, 25))


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (tests/report/install_chromium.sh installs it as root with apt)")


def colour_mask(image: np.ndarray, hex_colour: str, tolerance: float = 0.09) -> np.ndarray:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.abs(image[:, :, :3] - rgb).max(axis=2) < tolerance


def test_the_browser_shows_the_curves(report, tmp_path):
    import matplotlib.image

    browser = chromium()
    index = report[2]
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2400",
         index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (2400, 1200)

    # Not a blank or broken page: a good part of it is drawn.
    drawn = (image[:, :, :3] < 0.92).any(axis=2)
    assert drawn.mean() > 0.01

    # The three curves' colours (train_loss, val_loss, lr-SGD get the palette's first three),
    # each in far more pixels than its 10x10 swatch in the metric table: the lines are there,
    # and in page order, training above validation above learning rates.
    rows = []
    for colour in PALETTE[:3]:
        mask = colour_mask(image, colour)
        assert mask.sum() > 1500, (colour, int(mask.sum()))
        rows.append(np.median(np.nonzero(mask)[0]))
    assert rows[0] < rows[1] < rows[2]


def test_output_elsewhere_with_checkpoints_from_another_folder(report, tmp_path):
    run_dir, checkpoint, _ = report
    moved = tmp_path / "ckpts"
    shutil.copytree(checkpoint.dirpath, moved)
    out = tmp_path / "page"
    assert fulmen_cli(["report", str(run_dir), "-o", str(out), "--checkpoints", str(moved)]) == 0
    text = (out / "index.html").read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "lr.png", "train.png", "val.png"]
    assert f'<span class="best">{Path(checkpoint.best_model_path).name}</span>' in text


def test_a_sharded_checkpoint_directory_is_sized_by_its_files_and_ranked_from_its_metadata(report, tmp_path):
    """FSDP and DeepSpeed write each checkpoint as a ``*.ckpt`` directory: its size is what
    its files hold, and ModelCheckpoint's state is read from its small metadata file (the
    directory itself is never handed to torch.load); one without a known metadata file gets a
    note instead of a ranking."""
    import os

    run_dir, checkpoint, _ = report
    moved = tmp_path / "ckpts"
    shutil.copytree(checkpoint.dirpath, moved)
    sharded = moved / "epoch=9-step=99.ckpt"
    sharded.mkdir()
    shutil.copyfile(checkpoint.best_model_path, sharded / "fulmen_checkpoint.pt")  # fulmen-strategy-fsdp's layout
    (sharded / "shards").mkdir()
    (sharded / "shards" / "__0_0.distcp").write_bytes(b"\0" * 3_000_000)
    newest = max(p.stat().st_mtime for p in moved.glob("*.ckpt")) + 10
    os.utime(sharded, (newest, newest))  # the newest checkpoint: the one whose state is read
    size = sum(p.stat().st_size for p in sharded.rglob("*") if p.is_file())

    out = tmp_path / "page"
    assert fulmen_cli(["report", str(run_dir), "-o", str(out), "--checkpoints", str(moved)]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert f"<td>{sharded.name}</td>" in page.replace('<td class="num">', "<td>")
    assert f"{size / 1e6:.2f} MB" in page and size > 3_000_000
    assert f'<span class="best">{Path(checkpoint.best_model_path).name}</span>' in page  # ranking read
    assert "could not be read" not in page

    foreign = moved / "foreign.ckpt"
    foreign.mkdir()
    (foreign / "weights.bin").write_bytes(b"\1" * 1000)
    os.utime(foreign, (newest + 10, newest + 10))
    assert fulmen_cli(["report", str(run_dir), "-o", str(out), "--checkpoints", str(moved)]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "foreign.ckpt is a checkpoint directory without a metadata file the report reads" in page
    assert '<span class="best">' not in page and "0.00 MB" in page
