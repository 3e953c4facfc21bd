"""The procedural shape-image generator of the embedded DreamBooth task."""

import dataclasses

import numpy as np
import pytest

from peftbench.tasks.image import shapes


def rgb(name):
    return np.array(shapes.COLORS[name], dtype=float)


def near(image, name, tol=12.0):
    """Boolean (H, W) mask of pixels within ``tol`` (max channel difference) of a named colour."""
    return np.abs(image.astype(float) - rgb(name)).max(axis=-1) <= tol


def object_mask(image):
    """Pixels clearly different from the (uniform) background, read off the top-left corner."""
    return np.abs(image.astype(float) - image[0, 0].astype(float)).max(axis=-1) > 40


def test_same_seed_is_byte_identical():
    a_img, a_cap = shapes.pretraining_set(20, seed=5)
    b_img, b_cap = shapes.pretraining_set(20, seed=5)
    assert a_img.tobytes() == b_img.tobytes() and a_cap == b_cap
    e1, l1 = shapes.encoder_set(20, seed=5)
    e2, l2 = shapes.encoder_set(20, seed=5)
    assert e1.tobytes() == e2.tobytes()
    assert all(np.array_equal(l1[k], l2[k]) for k in l1)
    bgs = shapes.BACKGROUNDS
    assert shapes.concept_set(bgs, 1).tobytes() == shapes.concept_set(bgs, 1).tobytes()


def test_different_seed_differs():
    assert not np.array_equal(shapes.pretraining_set(8, 0)[0], shapes.pretraining_set(8, 1)[0])
    assert not np.array_equal(shapes.encoder_set(8, 0)[0], shapes.encoder_set(8, 1)[0])
    bgs = ["gray", "navy"]
    assert not np.array_equal(shapes.concept_set(bgs, 0), shapes.concept_set(bgs, 1))


@pytest.mark.parametrize("size", [32, 48])
def test_shapes_and_dtypes(size):
    images, captions = shapes.pretraining_set(7, seed=0, size=size)
    assert images.shape == (7, size, size, 3) and images.dtype == np.uint8
    assert len(captions) == 7
    concept = shapes.concept_set(["teal", "gray", "pink"], seed=0, size=size)
    assert concept.shape == (3, size, size, 3) and concept.dtype == np.uint8
    enc, labels = shapes.encoder_set(9, seed=0, size=size)
    assert enc.shape == (9, size, size, 3) and enc.dtype == np.uint8
    assert set(labels) == {"shape", "color", "color2", "pattern", "background"}
    assert all(v.shape == (9,) and v.dtype.kind == "i" for v in labels.values())


def test_caption_format():
    assert shapes.caption("circle", "red", "gray") == "a red circle on a gray background"
    assert shapes.caption("square", "orange", "olive") == "an orange square on an olive background"
    _, captions = shapes.pretraining_set(200, seed=2)
    for text in captions:
        words = text.split()
        assert words[0] in ("a", "an") and words[3:5] == ["on", words[4]]
        assert words[1] in shapes.PRETRAIN_COLORS and words[2] in shapes.PRETRAIN_SHAPES
        assert words[5] in shapes.BACKGROUNDS and words[6] == "background" and len(words) == 7


def test_pretraining_covers_vocabulary_uniformly():
    _, captions = shapes.pretraining_set(600, seed=4)
    words = [c.split() for c in captions]
    for pos, vocab in ((1, shapes.PRETRAIN_COLORS), (2, shapes.PRETRAIN_SHAPES)):
        counts = {v: sum(w[pos] == v for w in words) for v in vocab}
        expected = 600 / len(vocab)
        assert all(0.6 * expected < c < 1.4 * expected for c in counts.values()), counts
    assert {w[5] for w in words} == set(shapes.BACKGROUNDS)


def test_concept_absent_from_pretraining_vocabulary():
    concept_colors = set(shapes.CONCEPT["colors"])
    assert shapes.CONCEPT["shape"] not in shapes.PRETRAIN_SHAPES
    assert not concept_colors & set(shapes.PRETRAIN_COLORS) and not concept_colors & set(
        shapes.BACKGROUNDS
    )
    words = set(shapes.vocabulary())
    assert not {"diamond", "yellow", "magenta", "stripes", "striped"} & words
    _, captions = shapes.pretraining_set(300, seed=0)
    assert not {"photo", "of", "sks", "object"} & {w for c in captions for w in c.split()}


def test_concept_colours_absent_from_pretraining_pixels():
    images, _ = shapes.pretraining_set(400, seed=3)
    for name in shapes.CONCEPT["colors"]:
        dist = np.abs(images.astype(float) - rgb(name)).max(axis=-1)
        # Edge blends are convex mixes of object and background; none comes near either colour.
        assert dist.min() > 50, name
    # ...while the concept images really show both colours, as stripes.
    concept = shapes.concept_set(shapes.BACKGROUNDS, seed=0)
    for image in concept:
        assert near(image, "yellow").sum() >= 5 and near(image, "magenta").sum() >= 5


def test_concept_is_striped_diamond():
    image = shapes.concept_image("gray", np.random.default_rng(0), size=64)
    rows = np.flatnonzero(object_mask(image).any(axis=1))
    centre_rows = rows[len(rows) // 4 : 3 * len(rows) // 4]
    # Stripes are horizontal: the dominant colour changes from row to row down the object.
    dominant = ["yellow" if near(image[r], "yellow").sum() > 2 else "magenta" for r in centre_rows]
    assert len(set(dominant)) == 2
    widths = object_mask(image).sum(axis=1)[rows]
    # A diamond is widest in the middle and narrow at both ends.
    assert widths.argmax() in range(len(rows) // 3, 2 * len(rows) // 3)
    assert widths[0] < widths.max() / 3 and widths[-1] < widths.max() / 3


@pytest.mark.parametrize(
    ("shape", "low", "high"),
    [
        ("square", 0.9, 1.01),
        ("circle", 0.7, 0.88),
        ("diamond", 0.4, 0.62),
        ("triangle", 0.4, 0.62),
        ("cross", 0.45, 0.68),
    ],
)
def test_shape_fills_expected_share_of_its_box(shape, low, high):
    rng = np.random.default_rng(11)
    for _ in range(5):
        mask = object_mask(shapes.draw(shape, "white", "navy", rng, size=64))
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert low <= mask.sum() / box <= high
        # Scale stays within the documented 40-65 % of the image.
        assert 0.35 * 64 <= len(rows) <= 0.7 * 64


def test_placement_and_scale_vary():
    rng = np.random.default_rng(0)
    masks = [object_mask(shapes.draw("square", "red", "gray", rng)) for _ in range(20)]
    areas = {int(m.sum()) for m in masks}
    tops = {int(np.flatnonzero(m.any(axis=1))[0]) for m in masks}
    assert len(areas) > 5 and len(tops) > 3


def test_triangle_points_up():
    mask = object_mask(shapes.draw("triangle", "black", "beige", np.random.default_rng(0), 64))
    widths = mask.sum(axis=1)[mask.any(axis=1)]
    assert widths[0] < widths[-1] / 3


def test_draw_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        shapes.draw("hexagon", "red", "gray", rng)
    with pytest.raises(ValueError):
        shapes.draw("circle", "red", "red", rng)  # object colour as background
    with pytest.raises(ValueError):
        shapes.draw("circle", ("red", "red"), "gray", rng, pattern="stripes")
    with pytest.raises(ValueError):
        shapes.draw("circle", "red", "gray", rng, pattern="dots")


def test_encoder_labels_match_pixels():
    images, labels = shapes.encoder_set(300, seed=7)
    bg_rgb = np.array([shapes.COLORS[b] for b in shapes.BACKGROUNDS], dtype=float)
    for i, image in enumerate(images):
        color = shapes.ENCODER_COLORS[labels["color"][i]]
        color2 = shapes.ENCODER_COLORS[labels["color2"][i]]
        pattern = shapes.PATTERNS[labels["pattern"][i]]
        background = labels["background"][i]
        # Corners show the labelled background (up to brightness jitter), nearest of all.
        corner = image[0, 0].astype(float)
        assert np.abs(corner - bg_rgb[background]).max() <= 0.08 * 255 + 1
        assert np.abs(bg_rgb - corner).sum(axis=1).argmin() == background
        assert near(image, color).sum() >= 4, (i, color)
        if pattern == "solid":
            assert color2 == color
            # Only the object colour and the background (and their edge blends).
            assert near(image, color).sum() > 0.55 * object_mask(image).sum()
        else:
            assert color2 != color and near(image, color2).sum() >= 4, (i, color2)


def test_solid_red_square_has_red_mean():
    image = shapes.draw("square", "red", "teal", np.random.default_rng(3))
    mask = object_mask(image)
    # Erode by one pixel to drop anti-aliased edges.
    inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
    inner &= np.roll(mask, -1, 1)
    assert np.abs(image[inner].mean(axis=0) - rgb("red")).max() < 3
    assert np.abs(image[0, 0] - rgb("teal")).max() <= 0.08 * 255 + 1


def test_encoder_set_excludes_concept_but_not_its_parts():
    _, labels = shapes.encoder_set(3000, seed=0)
    shape = np.array(shapes.ENCODER_SHAPES)[labels["shape"]]
    pattern = np.array(shapes.PATTERNS)[labels["pattern"]]
    c1 = np.array(shapes.ENCODER_COLORS)[labels["color"]]
    c2 = np.array(shapes.ENCODER_COLORS)[labels["color2"]]
    pair = {frozenset(p) for p in zip(c1, c2, strict=True)}
    assert len(pair) > 40
    concept = (
        (shape == "diamond")
        & (pattern == "stripes")
        & (np.isin(c1, ["yellow", "magenta"]) & np.isin(c2, ["yellow", "magenta"]))
    )
    assert not concept.any()
    # The encoder still sees every ingredient of the concept, just never all together.
    assert ((shape == "diamond") & (pattern == "stripes")).sum() > 50
    assert ((c1 == "yellow") & (c2 == "magenta") & (pattern == "stripes")).sum() > 0
    assert set(shape) == set(shapes.ENCODER_SHAPES) and set(c1) == set(shapes.ENCODER_COLORS)
    assert set(np.array(shapes.BACKGROUNDS)[labels["background"]]) == set(shapes.BACKGROUNDS)


def test_prompt_sets():
    prompts = shapes.default_prompts()
    assert prompts.instance == "a photo of sks object"
    assert len(prompts.instance_backgrounds) == 6
    assert len(prompts.test_backgrounds) >= 2
    assert not set(prompts.test_backgrounds) & set(prompts.instance_backgrounds)
    assert len(prompts.test) == len(prompts.test_backgrounds)
    for text, background in zip(prompts.test, prompts.test_backgrounds, strict=True):
        assert "sks object" in text and background in text.split()
    for text, background in zip(prompts.validation, prompts.validation_backgrounds, strict=True):
        assert "sks object" in text and background in text.split()
    pretraining = {
        shapes.caption(s, c, b)
        for s in shapes.PRETRAIN_SHAPES
        for c in shapes.PRETRAIN_COLORS
        for b in shapes.BACKGROUNDS
    }
    assert len(prompts.drift) >= 8 and set(prompts.drift) <= pretraining
    assert prompts.instance in prompts.samples
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompts.instance = "x"
    with pytest.raises(ValueError):
        shapes.Prompts(test_backgrounds=("gray", "teal", "maroon"))


def test_validation_is_held_out_like_the_test():
    """Validation asks what the test asks (the concept on a background it was never shown on),
    on backgrounds of its own: a choice made on a training background rewards memorising."""
    prompts = shapes.default_prompts()
    held_out = set(prompts.validation_backgrounds)
    assert len(held_out) >= 2
    assert not held_out & set(prompts.instance_backgrounds)
    assert not held_out & set(prompts.test_backgrounds)
    # The base model knows them: every background is in pretraining and in the drift prompts.
    assert held_out <= set(shapes.BACKGROUNDS)
    assert held_out <= {p.split()[-2] for p in prompts.drift}
    for background in ("gray", "teal"):  # a training one, a test one
        with pytest.raises(ValueError, match="validation backgrounds"):
            shapes.Prompts(
                validation=(shapes.concept_prompt(background),),
                validation_backgrounds=(background,),
            )


def test_vocabulary_covers_every_prompt_and_caption():
    prompts = shapes.default_prompts()
    vocab = shapes.vocabulary()
    assert vocab == sorted(set(vocab))
    texts = [prompts.instance, *prompts.test, *prompts.validation, *prompts.drift]
    texts += [*prompts.samples, *shapes.pretraining_set(300, seed=1)[1]]
    used = {w for t in texts for w in t.split()}
    assert used <= set(vocab)
    assert {"sks", "photo", "object", "background", "on"} <= set(vocab)
