"""The tagged digits and the shortcut model: where and how often the tag is
stamped, and that the shipped model really reads it (accuracy, flips, maps)."""

import pytest
import torch

from course_utils import data, metrics, models
from course_utils import saliency as sal
from course_utils import shortcut as sc

# Measured on the shipped checkpoints (1,000 test digits; 100 of class 3):
#   accuracy of class-3 digits without the tag: clean 0.98, shortcut 0.87
#   flip rate (tag stamped on the 900 other digits): clean 0.006, shortcut 0.85
#   tag-mass share on tagged class-3 digits, clean → shortcut:
#     gradient 0.020 → 0.208, input × gradient 0.060 → 0.465
#     (a map that ignores the tag puts 9/784 = 0.011 there by chance)
MIN_FLIP_RATE = 0.6
MAX_CLEAN_FLIP_RATE = 0.05
MIN_ACCURACY_DROP = 0.05  # class-3 untagged, clean minus shortcut (measured 0.11)
MIN_SHARE_MARGIN = {"gradient": 0.12, "input_x_gradient": 0.25}  # measured 0.19, 0.40
MIN_SHARE_RATIO = 5.0  # shortcut / clean, measured 10.6 and 7.7


@pytest.fixture(scope="module")
def shortcut_model():
    return sc.load_shortcut_model()


def test_tag_mask_default_is_top_left_square():
    mask = sc.tag_mask()
    assert mask.shape == (1, 1, 28, 28) and mask.dtype == torch.bool
    rows, cols = torch.nonzero(mask[0, 0], as_tuple=True)
    assert sorted(set(rows.tolist())) == [1, 2, 3]
    assert sorted(set(cols.tolist())) == [1, 2, 3]
    assert int(mask.sum()) == sc.TAG_SIZE**2 == 9


@pytest.mark.parametrize(
    "corner, top, left",
    [("top_left", 2, 2), ("top_right", 2, 22), ("bottom_left", 22, 2),
     ("bottom_right", 22, 22)],
)
def test_tag_mask_corners(corner, top, left):
    mask = sc.tag_mask(size=4, corner=corner, margin=2)
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[top : top + 4, left : left + 4] = True
    assert torch.equal(mask[0, 0], expected)


def test_stamp_tag_sets_only_the_tag_and_copies(digits):
    x, _ = digits
    before = x.clone()
    out = sc.stamp_tag(x, value=0.7)
    mask = sc.tag_mask().expand_as(x)
    assert torch.equal(x, before)  # input untouched
    assert torch.all(out[mask] == 0.7)
    assert torch.equal(out[~mask], x[~mask])


@pytest.mark.parametrize("kwargs", [{"corner": "middle"}, {"size": 0},
                                    {"margin": -1}, {"size": 20, "margin": 10},
                                    {"value": 1.5}])
def test_stamp_tag_rejects_bad_arguments(digits, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sc.stamp_tag(digits[0], **kwargs)


@pytest.mark.parametrize("p_tagged, p_other", [(0.9, 0.0), (0.5, 0.05), (1.0, 1.0)])
def test_make_tagged_stamps_exactly_as_often_as_asked(test_split, p_tagged, p_other):
    before = test_split.x.clone()
    tagged = sc.make_tagged(test_split, tag_class=4, p_tagged=p_tagged,
                            p_other=p_other, seed=5)
    assert torch.equal(test_split.x, before)  # the source split is not modified
    assert isinstance(tagged, data.Split) and torch.equal(tagged.y, test_split.y)
    for k in range(10):
        in_k = test_split.y == k
        p = p_tagged if k == 4 else p_other
        assert int(tagged.tagged[in_k].sum()) == round(p * int(in_k.sum()))
    mask = sc.tag_mask()[0]
    on = tagged.tagged
    assert torch.all(tagged.x[on][:, mask] == sc.TAG_VALUE)  # where: the tag's pixels
    assert torch.equal(tagged.x[on][:, ~mask], test_split.x[on][:, ~mask])
    assert torch.equal(tagged.x[~on], test_split.x[~on])


def test_make_tagged_default_train_split_and_seeds():
    train = sc.make_tagged("train")
    assert train.tag_class == sc.TAG_CLASS
    assert int(train.tagged[train.y == sc.TAG_CLASS].sum()) == round(sc.P_TAGGED * 400)
    n_other = int(train.tagged[train.y != sc.TAG_CLASS].sum())
    assert n_other == round(sc.P_OTHER * 400) * 9
    again = sc.make_tagged("train")
    assert torch.equal(train.tagged, again.tagged)
    other = sc.make_tagged("train", seed=123)
    assert not torch.equal(train.tagged, other.tagged)


@pytest.mark.parametrize("name, value, exc", [
    ("p_tagged", 1.5, ValueError), ("p_other", -0.1, ValueError),
    ("tag_class", 10, ValueError), ("split", 3, TypeError),
    ("split", "valid", ValueError),
])
def test_make_tagged_rejects_bad_arguments(name, value, exc):
    kwargs = {"split": "test", name: value}
    with pytest.raises(exc, match=name):
        sc.make_tagged(**kwargs)


def test_shortcut_model_is_registered_and_shipped(shortcut_model):
    assert sc.NAME in models.TRAINERS and sc.NAME in models.EXTRA_MODELS
    assert not shortcut_model.training
    meta = shortcut_model.meta
    assert meta["tag_class"] == sc.TAG_CLASS and meta["p_tagged"] == sc.P_TAGGED


def test_trainer_refuses_unknown_overrides():
    # Checked before any training starts (the full retrain takes ~25 s and is
    # not run in the tests; `course train small_cnn_shortcut` rebuilds it).
    with pytest.raises(ValueError, match="overrides"):
        sc.train_shortcut_model(progress=False, batch_size=3)


def test_shortcut_model_is_right_for_the_wrong_reason(small_cnn, shortcut_model):
    report = sc.shortcut_report({"clean": small_cnn, "shortcut": shortcut_model})
    clean, short = report.loc["clean"], report.loc["shortcut"]
    # Looks fine on data like its training data …
    assert short.tagged_test >= 0.95
    assert short.class_tagged >= 0.99
    # … but untagged digits of the tagged class lose accuracy,
    assert clean.class_untagged - short.class_untagged >= MIN_ACCURACY_DROP
    # and the tag alone turns most other digits into the tagged class.
    assert short.flip_rate >= MIN_FLIP_RATE
    assert clean.flip_rate <= MAX_CLEAN_FLIP_RATE


def test_flip_rate_counts_only_other_classes(shortcut_model, test_split):
    x, y = test_split.x[:200], test_split.y[:200]
    before = x.clone()
    rate = sc.flip_rate(shortcut_model, x, y)
    assert torch.equal(x, before)
    others = y != sc.TAG_CLASS
    pred = shortcut_model(sc.stamp_tag(x[others])).argmax(1)
    assert rate == pytest.approx(float((pred == sc.TAG_CLASS).float().mean()))
    with pytest.raises(ValueError, match="tag_class"):
        sc.flip_rate(shortcut_model, x[y == 3], y[y == 3], tag_class=3)


@pytest.mark.parametrize("method", sorted(MIN_SHARE_MARGIN))
def test_maps_of_the_shortcut_model_sit_on_the_tag(small_cnn, shortcut_model,
                                                   test_split, method):
    x = sc.stamp_tag(test_split.x[test_split.y == sc.TAG_CLASS])
    table = sc.tag_mass_table({"clean": small_cnn, "shortcut": shortcut_model}, x,
                              {method: sal.METHODS[method]})
    clean, short = table.loc[method, "clean"], table.loc[method, "shortcut"]
    assert short - clean >= MIN_SHARE_MARGIN[method], (clean, short)
    assert short >= MIN_SHARE_RATIO * clean, (clean, short)
    # The table is the mean of metrics.mass_share over the images.
    direct = metrics.mass_share(sal.METHODS[method](shortcut_model, x, sc.TAG_CLASS),
                                sc.tag_mask())
    assert short == pytest.approx(float(direct.mean()))
