"""Models: named layers, shipped checkpoints' accuracy, deterministic training."""

import pytest
import torch
from torch import nn

from course_utils import data, models

SMALL_CNN_LAYERS = ["normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2",
                    "fc1", "relu3", "fc2"]
RESNET_LAYERS = ["normalize", "stem", "layer1", "layer2", "layer3", "pool", "fc"]
# Accuracy targets on the 1,000 test digits (issue: SmallCNN ≥ 97%, ResNet ≥ 97.5%).
TARGETS = {"small_cnn": 0.97, "resnet_small": 0.975}


def test_named_layers():
    assert [n for n, _ in models.SmallCNN().named_children()] == SMALL_CNN_LAYERS
    assert [n for n, _ in models.ResNetSmall().named_children()] == RESNET_LAYERS


@pytest.mark.parametrize("cls", [models.SmallCNN, models.ResNetSmall])
def test_relus_are_separate_not_inplace_modules(cls):
    model = cls()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(not r.inplace for r in relus)
    assert len({id(r) for r in relus}) == len(relus)
    # One ReLU module per use: every ReLU runs exactly once per forward.
    calls = {}
    hooks = [r.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
             for r in relus]
    model(torch.rand(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert sorted(calls.values()) == [1] * len(relus)


@pytest.mark.parametrize("cls", [models.SmallCNN, models.ResNetSmall])
def test_normalize_first_with_train_stats(cls):
    model = cls()
    assert isinstance(model.normalize, models.Normalize)
    assert float(model.normalize.mean) == pytest.approx(data.train_mean())
    assert float(model.normalize.std) == pytest.approx(data.train_std())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_checkpoint_reaches_target(name):
    model = models.load_pretrained(name)
    assert not model.training
    acc = models.evaluate(model)
    assert acc >= TARGETS[name], f"{name}: {acc:.4f} < {TARGETS[name]}"


def test_training_is_deterministic_for_a_seed():
    sub = data.load_split("train")
    x, y = sub.x[:512], sub.y[:512]
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = models.SmallCNN()
        models.train(model, (x, y), epochs=1, seed=3, progress=False)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    torch.manual_seed(4)
    other = models.SmallCNN()
    models.train(other, (x, y), epochs=1, seed=4, progress=False)
    assert not torch.equal(other.fc2.weight, states[0]["fc2.weight"])


def test_training_learns():
    sub = data.load_split("train")
    torch.manual_seed(0)
    model = models.SmallCNN()
    report = models.train(model, (sub.x[:1000], sub.y[:1000]), epochs=2, progress=False)
    assert report["losses"][1] < report["losses"][0]
    assert models.evaluate(model) > 0.6  # untrained: about 0.1


def test_unknown_model_names_known_ones():
    with pytest.raises(ValueError, match="small_cnn"):
        models.load_pretrained("nope")


def test_missing_checkpoint_says_how_to_rebuild(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="course train small_cnn"):
        models.load_pretrained("small_cnn")


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="epochs"):
        models.train(models.SmallCNN(), epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        models.train(models.SmallCNN(), lr=-1, progress=False)
    with pytest.raises(ValueError, match="labels"):
        models.train(models.SmallCNN(), (torch.zeros(3, 1, 28, 28), torch.zeros(2).long()),
                     progress=False)


# ------------------------------------------------------------------ registry


def test_loading_a_checkpoint_imports_no_trainer_module():
    """The registry is declarative: loading small_cnn_random_labels (whose recipe
    lives in sanity) imports neither sanity, shortcut, Altair nor scikit-image."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from course_utils import models\n"
        "models.load_pretrained('small_cnn_random_labels')\n"
        "models.known_models(); 'small_cnn_shortcut' in models.TRAINERS\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('altair', 'skimage') or m.startswith(('course_utils.sanity', "
        "'course_utils.shortcut', 'course_utils.plotting')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_registry_names_match_their_modules_and_resolve_lazily():
    from course_utils import sanity, shortcut

    names = {sanity.RANDOM_LABELS_NAME, sanity.RESEEDED_NAME, shortcut.NAME}
    assert names | set(models.RECIPES) == set(models.known_models())
    assert set(models.TRAINERS) == set(models.CHECKPOINTS)
    assert models.trainer_for(shortcut.NAME) is shortcut.train_shortcut_model
    assert (
        models.trainer_for(sanity.RANDOM_LABELS_NAME)
        is sanity.labels.train_random_labels_checkpoint
    )
    seed1 = models.trainer_for(sanity.RESEEDED_NAME)
    assert seed1.func is models.build_and_train
    assert seed1.keywords == {"name": "small_cnn", "seed": 1}
    for name, entry in models.CHECKPOINTS.items():
        assert isinstance(models.build(name), entry.build)
    with pytest.raises(ValueError, match="unknown model"):
        models.trainer_for("small_cnn_typo")
    with pytest.raises(KeyError):
        models.TRAINERS["small_cnn_typo"]
    with pytest.raises(ValueError, match="overrides"):
        models.recipe_settings("small_cnn", {"epoch": 3})


def test_train_stop_hook_and_constant_schedule():
    split = data.load_split("train")
    xy = (split.x[:64], split.y[:64])
    seen = []

    def stop(model, epoch):
        assert not model.training  # called in eval mode
        seen.append(epoch)
        return epoch == 2

    torch.manual_seed(0)
    model = models.SmallCNN()
    report = models.train(model, xy, epochs=5, batch_size=32, progress=False,
                          schedule="constant", stop=stop)
    assert seen == [1, 2] and len(report["losses"]) == 2
    # A constant schedule is plain Adam: the same as stepping it by hand.
    torch.manual_seed(0)
    ref = models.SmallCNN()
    opt = torch.optim.Adam(ref.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    ref.train()
    for _ in range(2):
        order = torch.randperm(64, generator=gen)
        for b in range(0, 64, 32):
            rows = order[b : b + 32]
            loss = nn.functional.cross_entropy(ref(xy[0][rows]), xy[1][rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="schedule"):
        models.train(models.SmallCNN(), xy, epochs=1, schedule="step", progress=False)
