"""The samples page: per sample prompt, the real image, the base model and every run side by
side, each full size on a click; the sample grids cut back into the images the image task
generated (its own ``sample_grid`` writes the grids here)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from factories import make_base_result, make_result
from PIL import Image

from peftbench.report.browser import OFFLINE_FLAGS, chromium
from peftbench.report.pages_samples import samples_page
from peftbench.report.samples_grid import (
    MAX_REFERENCE_PX,
    GridLayoutError,
    split_sample_grid,
)
from peftbench.tasks.image.run import sample_grid

EVIL_PROMPT = "<script>alert(1)</script> on a teal background"
PROMPTS = ["a photo of sks object", "a photo of sks object on a teal background", EVIL_PROMPT]


def images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("side", [8, 32, 100])
def test_split_returns_the_generated_images(side):
    rng = np.random.default_rng(side)
    base, tuned = images(rng, 4, side), images(rng, 4, side)
    # The image task's own call: enlarged to about 96 pixels (scale 12, 3 and 1 here).
    grid = sample_grid(base, tuned, max(1, 96 // side))
    tiles = split_sample_grid(grid, 4)
    assert len(tiles) == 4
    for (b, t), want_b, want_t in zip(tiles, base, tuned, strict=True):
        assert b.size == t.size == (side, side)
        assert np.array_equal(np.asarray(b), want_b) and np.array_equal(np.asarray(t), want_t)


def test_split_rejects_another_layout():
    rng = np.random.default_rng(0)
    grid = sample_grid(images(rng, 4, 16), images(rng, 4, 16), 6)
    with pytest.raises(GridLayoutError):
        split_sample_grid(grid, 3)  # the wrong number of prompts
    with pytest.raises(GridLayoutError):
        split_sample_grid(Image.new("RGB", (64, 32)), 1)  # not base | tuned rows


def write_data(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A prepared data folder like the image task's: a manifest with sample prompts and real
    test, validation and training images (a test image of prompt 2 and of the evil prompt, one
    larger than the page embeds). Returns the real images by file name."""
    real = {
        "test/000.png": images(rng, 1, 32)[0],
        "test/001.png": images(rng, 1, 1000)[0],
        "valid/000.png": images(rng, 1, 32)[0],
        "instance/000.png": images(rng, 1, 32)[0],
        "instance/001.png": images(rng, 1, 32)[0],
    }
    for name, pixels in real.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
    manifest = {
        "resolution": 32,
        "instance": [
            {"image": "instance/000.png", "prompt": "a photo of sks object on a gray background"},
            {"image": "instance/001.png", "prompt": "a photo of sks object on a navy background"},
        ],
        "valid": [{"image": "valid/000.png", "prompt": "a photo of sks object on a gray bg"}],
        "test": [
            {"image": "test/000.png", "prompt": PROMPTS[1]},
            {"image": "test/001.png", "prompt": EVIL_PROMPT},
        ],
        "drift_prompts": ["a red circle on a navy background"],
        "sample_prompts": PROMPTS,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return real


def write_runs(root: Path, rng: np.random.Generator) -> tuple[list, np.ndarray, dict]:
    """Run folders with the image task's grids: the base model, two runs of the same base
    images, one whose base images differ, a failed run."""
    base = images(rng, len(PROMPTS), 32)
    results = [
        make_base_result(task="image", similarity=0.30),
        make_result("lora", "r8", task="image", similarity=0.70),
        make_result("oft", "b16", task="image", similarity=0.60),
        make_result("loha", "other-settings", task="image", similarity=0.65),
        make_result("ia3", "broken", task="image", status="failed", error="CUDA <oom>"),
    ]
    tuned = {}
    runs = []
    for result in results:
        folder = root / result["experiment"] / "seed0"
        folder.mkdir(parents=True)
        runs.append((result, folder))
        if result["status"] != "success":
            continue
        own = base if result["method"] == "base" else images(rng, len(PROMPTS), 32)
        left = images(rng, len(PROMPTS), 32) if result["name"] == "other-settings" else base
        tuned[result["experiment"]] = own
        sample_grid(left, own, 3).save(folder / "samples.png")
    return runs, base, tuned


def decoded(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split("base64,", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def cells(page: str, section: str) -> dict[str, tuple[str, str]]:
    """id -> (image data URI or "", caption) of the cells of one prompt's section."""
    body = page.split(f'<section class="prompt" id="{section}">', 1)[1].split("</section>")[0]
    found = {}
    for cell_id, content in re.findall(
        r'<figure class="cell [^"]*"(?: id="([^"]*)")?>(.*?)</figure>', body
    ):
        uri = re.search(r'<img src="([^"]+)"', content)
        caption = re.search(r"<figcaption>(.*?)</figcaption>", content).group(1)
        found[cell_id or "none"] = (uri.group(1) if uri else "", html.unescape(caption))
    return found


@pytest.fixture
def page(tmp_path: Path) -> tuple[str, dict, np.ndarray, dict]:
    rng = np.random.default_rng(1)
    real = write_data(tmp_path / "data", rng)
    runs, base, tuned = write_runs(tmp_path / "runs", rng)
    return samples_page("image", runs, tmp_path / "data"), real, base, tuned


def test_one_row_per_prompt_with_real_image_base_and_every_run(page):
    text, real, base, tuned = page
    # Full size on a click is CSS (the link's :target), so it needs no script of its own.
    assert "figure.cell:target" in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)  # every image inline, no network
    assert EVIL_PROMPT not in text and html.escape(EVIL_PROMPT) in text
    for i, prompt in enumerate(PROMPTS):
        row = cells(text, f"prompt-{i + 1}")
        assert f'<p class="prompt-text">{html.escape(prompt)}</p>' in text
        captions = [caption for _, caption in row.values()]
        # The real image (or a note), the base model, then every run by experiment; a run
        # whose base images are not the base column's says so.
        assert captions[1:] == [
            "base model (no fine-tuning)",
            "loha/other-settings · seed 0 (its base image differs from the base column's)",
            "lora/r8 · seed 0",
            "oft/b16 · seed 0",
        ]
        # Every image is the generated one, at its generated size.
        assert np.array_equal(decoded(row[f"prompt-{i + 1}-base"][0]), base[i])
        by_caption = {caption.split(" · ")[0]: uri for uri, caption in row.values()}
        for experiment in ("lora/r8", "oft/b16", "loha/other-settings"):
            assert np.array_equal(decoded(by_caption[experiment]), tuned[experiment][i])
    first, second, evil = (cells(text, f"prompt-{i}") for i in (1, 2, 3))
    # No test, validation or training image has prompt 1's exact text.
    assert first["none"] == ("", "real image")
    assert np.array_equal(decoded(second["prompt-2-real"][0]), real["test/000.png"])
    assert second["prompt-2-real"][1] == "real image (test image)"
    # A large photo is embedded shrunk.
    assert decoded(evil["prompt-3-real"][0]).shape == (MAX_REFERENCE_PX, MAX_REFERENCE_PX, 3)
    # The concept: the training images; the failed run listed with its (escaped) error.
    assert "The concept (real training images)" in text and 'id="concept-2"' in text
    assert "ia3/broken" in text and html.escape("CUDA <oom>") in text
    assert "similarity 0.700" in text


def test_without_prepared_data_every_grid_is_shown_whole(tmp_path: Path):
    runs, _, _ = write_runs(tmp_path / "runs", np.random.default_rng(2))
    text = samples_page("image", runs)
    assert 'class="prompt"' not in text and "No per-prompt rows" in text
    assert text.count('<img src="data:image/png;base64,') == 4  # the four grids, as written
    assert "<h2>ia3/broken</h2>" in text and "No sample grid: CUDA &lt;oom&gt;" in text


@pytest.mark.skipif(chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_click_opens_full_size_in_chromium(page, tmp_path: Path):
    text = page[0]
    # Read once the page has loaded (the fragment's :target is matched by then).
    probe = """<script>
window.addEventListener("load", function () {
var cell = document.getElementById("prompt-2-run1");
var style = getComputedStyle(cell), img = cell.querySelector("img").getBoundingClientRect();
var other = getComputedStyle(document.getElementById("prompt-2-base"));
document.body.dataset.probe = [style.position, img.width, other.position, window.innerWidth,
  getComputedStyle(cell.querySelector(".close")).display].join("|");
});
</script>"""
    path = tmp_path / "samples.html"
    path.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    command = [
        chromium(),
        *OFFLINE_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,800",
        "--dump-dom",
        path.as_uri() + "#prompt-2-run1",  # what a click on that image navigates to
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    position, width, other, window, close = (
        re.search(r'data-probe="([^"]*)"', proc.stdout).group(1).split("|")
    )
    # The clicked image covers the window, far larger than in its row; the others stay.
    assert position == "fixed" and other == "static" and close == "block"
    assert float(width) > 4 * 128 and float(width) <= float(window)
