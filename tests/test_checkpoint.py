"""Checkpoints: round trip, weights_only loading, RNG states, and one clear error per bad file."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_pcae

from pcae.checkpoint import (
    FORMAT_VERSION,
    export_pretrained,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
    to_plain,
)
from pcae.errors import PcaeError
from pcae.kinds import load_model
from pcae.pixelcnn import GatedPixelCNN, PixelCNNConfig

CONFIG = PixelCNNConfig(channels=8, n_layers=1, cond_dim=3, image_size=(6, 5))


def make_checkpoint(model=None, kind="pixelcnn"):
    torch.manual_seed(0)
    model = model or GatedPixelCNN(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (2, 1, 6, 5))
    h = torch.randn(2, 3)
    model(x, h).float().mean().backward()
    optimizer.step()
    return model, {
        "kind": kind,
        "configs": {"model": CONFIG, "train": {"lr": 1e-3, "out": Path("runs/x")}},
        "state_dicts": {"model": model.state_dict()},
        "optimizer": optimizer.state_dict(),
        "step": 1, "epoch": 0, "position": 1,
        "rng": rng_states(),
        "data": {"source": "fashion-mnist", "classes": ("a", "b", "c"), "skipped": []},
    }


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, checkpoint = make_checkpoint()
    path = save_checkpoint(checkpoint, tmp_path / "last.pt")
    assert not [p for p in tmp_path.iterdir() if p.name != "last.pt"], "temp file left behind"
    loaded = torch.load(path, weights_only=True)  # everything stored is weights_only-loadable
    assert loaded["format_version"] == FORMAT_VERSION and loaded["kind"] == "pixelcnn"
    assert loaded["configs"]["model"]["image_size"] == [6, 5]  # tuples and paths became plain values
    assert loaded["configs"]["train"]["out"] == "runs/x"
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == model.layers[0].v_conv.weight.shape

    rebuilt, ckpt = load_model(path)
    assert ckpt["step"] == 1 and ckpt["data"]["classes"] == ["a", "b", "c"]
    assert rebuilt.config == CONFIG and not rebuilt.training
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    x, h = torch.randint(0, 256, (3, 1, 6, 5)), torch.randn(3, 3)
    model.eval()
    assert torch.equal(model(x, h), rebuilt(x, h))


def test_bf16_weights_load_as_float32_on_cpu(tmp_path):
    model, checkpoint = make_checkpoint()
    checkpoint["state_dicts"]["model"] = model.to(torch.bfloat16).state_dict()
    rebuilt, _ = load_model(save_checkpoint(checkpoint, tmp_path / "bf16.pt"))
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in rebuilt.parameters())
    assert torch.equal(rebuilt.head2.weight, model.head2.weight.float())


def test_rng_states_round_trip():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    states = rng_states()
    first = (torch.rand(3), np.random.rand(3), random.random())
    states = to_plain(states)  # what comes back from a checkpoint
    set_rng_states(states)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_to_plain_refuses_objects():
    assert to_plain({"a": (1, 2), "b": np.float32(0.5), "c": [Path("x")]}) == \
        {"a": [1, 2], "b": 0.5, "c": ["x"]}
    with pytest.raises(TypeError, match="cannot store"):
        to_plain({"f": object()})


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """name -> (path, kind asked for, expected words in the error)."""
    tmp_path = tmp_path_factory.mktemp("bad")
    _, checkpoint = make_checkpoint()
    good = save_checkpoint(checkpoint, tmp_path / "good.pt")
    data = good.read_bytes()
    cases = {}
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "truncated.pt", None, "corrupt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint at all" * 10)
    cases["garbage"] = (tmp_path / "garbage.pt", None, "corrupt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    cases["foreign"] = (tmp_path / "foreign.pt", None, "not a pcae checkpoint")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases["list"] = (tmp_path / "list.pt", None, "not a pcae checkpoint")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"pcae": "checkpoint", "x": Evil()}, f, protocol=2)
    cases["code"] = (tmp_path / "evil.pt", None, "not a pcae checkpoint")
    cases["missing"] = (tmp_path / "nope.pt", None, "no such checkpoint")
    cases["folder"] = (tmp_path, None, "is a folder")
    cases["other kind"] = (good, "autoencoder", "is a 'pixelcnn' checkpoint, expected 'autoencoder'")
    newer = dict(torch.load(good, weights_only=True), format_version=FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    cases["newer"] = (tmp_path / "newer.pt", None, "newer than this pcae reads")
    incomplete = {k: v for k, v in torch.load(good, weights_only=True).items() if k != "state_dicts"}
    torch.save(incomplete, tmp_path / "incomplete.pt")
    cases["incomplete"] = (tmp_path / "incomplete.pt", None, "missing its 'state_dicts'")
    for name, step, words in [("step text", "three", "field 'step' must be an integer >= 0, got 'three'"),
                              ("negative step", -5, "field 'step' must be an integer >= 0, got -5")]:
        torch.save(dict(torch.load(good, weights_only=True), step=step), tmp_path / f"{name}.pt")
        cases[name] = (tmp_path / f"{name}.pt", None, words)
    return cases


CASES = ["truncated", "garbage", "foreign", "list", "code", "missing", "folder", "other kind",
         "newer", "incomplete", "step text", "negative step"]


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoints_are_pcae_errors_naming_the_file(case, lazy, bad_files, capsys):
    path, kind, words = bad_files[case]
    with pytest.raises(PcaeError) as info:
        load_checkpoint(path, kind=kind, lazy=lazy)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message
    assert "must never run" not in capsys.readouterr().out


def test_diverged_weights_are_refused_when_read(tmp_path):
    _, checkpoint = make_checkpoint()
    name = next(iter(checkpoint["state_dicts"]["model"]))
    checkpoint["state_dicts"]["model"][name][0] = float("inf")
    path = save_checkpoint(checkpoint, tmp_path / "inf.pt")
    with pytest.raises(PcaeError, match=f"its weights hold NaN or inf \\(model/{name}\\)"):
        load_checkpoint(path)
    assert load_checkpoint(path, lazy=True)["kind"] == "pixelcnn"  # a mapped read is for its configs


def test_a_lazy_read_maps_the_same_checkpoint(tmp_path):
    """lazy=True (what the CLI's resume checks use) gives the same dict without reading the weights first."""
    model, checkpoint = make_checkpoint()
    path = save_checkpoint(checkpoint, tmp_path / "m.pt")
    full, lazy = load_checkpoint(path), load_checkpoint(path, lazy=True)
    assert lazy["kind"] == full["kind"] and lazy["configs"] == full["configs"] and lazy["step"] == full["step"]
    for name, tensor in full["state_dicts"]["model"].items():
        assert torch.equal(lazy["state_dicts"]["model"][name], tensor)


def test_unknown_kind_cannot_be_rebuilt(tmp_path):
    _, checkpoint = make_checkpoint(kind="mystery")
    path = save_checkpoint(checkpoint, tmp_path / "m.pt")
    with pytest.raises(PcaeError, match="kind 'mystery' is not known.*known: autoencoder, pixelcnn, portrait"):
        load_model(path)


def test_a_kind_registered_by_another_package_loads(tmp_path, monkeypatch):
    """pcae.kinds is the one table of model kinds: pcae's own are in it, and a new one can join."""
    from pcae import kinds

    assert {"pixelcnn", "autoencoder", "portrait"} <= set(kinds.kinds())
    model, checkpoint = make_checkpoint(kind="mystery")
    path = save_checkpoint(checkpoint, tmp_path / "m.pt")
    monkeypatch.setattr(kinds, "_KINDS", dict(kinds.kinds()))  # the registration ends with the test

    def rebuild(ckpt):
        rebuilt = GatedPixelCNN(PixelCNNConfig(**ckpt["configs"]["model"]))
        rebuilt.load_state_dict(ckpt["state_dicts"]["model"])
        return rebuilt

    kinds.register_kind("mystery", task=lambda ckpt: None, model=rebuild)
    loaded, _ = load_model(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


@pytest.mark.parametrize("command,case", [("sample", "truncated"), ("sample", "newer"),
                                          ("evaluate", "foreign"), ("evaluate", "missing")])
def test_cli_bad_checkpoint_is_one_line(command, case, bad_files, tmp_path, monkeypatch, capsys):
    path, _, words = bad_files[case]
    extra = ["--out", tmp_path / "grid.png"] if command == "sample" else []
    code, out, err = run_pcae(monkeypatch, capsys, command, path, *extra)
    assert code == 1, (out, err)
    assert err.strip().count("\n") == 0 and words in err and "Traceback" not in err + out
    assert not (tmp_path / "grid.png").exists()


def test_cli_sample_refuses_another_kind(tmp_path, monkeypatch, capsys):
    _, checkpoint = make_checkpoint(kind="autoencoder")
    path = save_checkpoint(checkpoint, tmp_path / "ae.pt")
    code, out, err = run_pcae(monkeypatch, capsys, "sample", path, "--out", tmp_path / "g.png")
    assert code == 1 and "expected 'pixelcnn'" in err and err.strip().count("\n") == 0


# ----------------------------------------------------------------------------- pcae export: safetensors

EXPORT_SCRIPT = """
import sys, torch
def refused(*args, **kwargs):
    raise AssertionError("torch.load was called")
torch.load = refused                      # an exported folder is read without pickle
import pcae
from pcae.sampling import sample
model, checkpoint = pcae.load_pretrained(sys.argv[1])
images = sample(model, 3, (1, 6, 5), torch.randn(3, 3, generator=torch.Generator().manual_seed(1)),
                generator=torch.Generator().manual_seed(7))
torch.save(images, sys.argv[2])          # saving is fine; only loading would run code
print(checkpoint["kind"], checkpoint["step"])
"""


def test_an_exported_folder_loads_without_pickle_and_samples_the_same_images(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from pcae.sampling import sample

    model, checkpoint = make_checkpoint()
    save_checkpoint(checkpoint, tmp_path / "last.pt")
    folder = tmp_path / "exported"
    code, out, err = run_pcae(monkeypatch, capsys, "export", tmp_path / "last.pt", folder)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert "pixelcnn model, step 1" in out
    # both files are as readable as any file written under this umask: an export is for sharing
    from pcae.files import usual_mode
    assert {(folder / n).stat().st_mode & 0o777 for n in ("config.json", "model.safetensors")} == {usual_mode()}
    script = tmp_path / "load.py"
    script.write_text(EXPORT_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "x.pt")],
                            capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pixelcnn", "1"]
    reference, _ = load_model(tmp_path / "last.pt")
    expected = sample(reference, 3, (1, 6, 5), torch.randn(3, 3, generator=torch.Generator().manual_seed(1)),
                      generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.load(tmp_path / "x.pt"), expected)
    # the folder goes wherever a checkpoint does, and is refused as such where it cannot
    assert load_checkpoint(folder, kind="pixelcnn")["configs"]["model"]["cond_dim"] == 3
    with pytest.raises(PcaeError, match="is a 'pixelcnn' checkpoint, expected 'autoencoder'"):
        load_checkpoint(folder, kind="autoencoder")
    # an existing export needs --force; a user's file there is never replaced
    code, _, err = run_pcae(monkeypatch, capsys, "export", tmp_path / "last.pt", folder)
    assert code == 1 and "already holds" in err and "--force" in err
    assert run_pcae(monkeypatch, capsys, "export", tmp_path / "last.pt", folder, "--force")[0] == 0
    (folder / "config.json").write_text('{"mine": 1}')
    code, _, err = run_pcae(monkeypatch, capsys, "export", tmp_path / "last.pt", folder, "--force")
    assert code == 1 and "config.json: is not a file pcae wrote" in err
    with pytest.raises(PcaeError, match="not a pcae pretrained model's config"):
        load_checkpoint(folder)


@pytest.mark.parametrize("field, value, says", [
    ("groups", 3, "field 'groups' must be a list of names, got 3"),
    ("configs", [], "field 'configs' must be an object, got []"),
    ("step", -1, "field 'step' must be an integer >= 0, got -1"),
    ("omitted", {"model": 1}, "field 'omitted' must be an object of objects"),
])
def test_an_exported_config_with_a_field_of_the_wrong_type_is_one_line(tmp_path, monkeypatch, capsys, field, value, says):
    _, checkpoint = make_checkpoint()
    folder = export_pretrained(checkpoint, tmp_path / "exported")
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    code, out, err = run_pcae(monkeypatch, capsys, "sample", folder, "--out", tmp_path / "s.png")
    assert code == 1 and err.strip().count("\n") == 0
    assert str(folder / "config.json") in err and says in err


@pytest.mark.parametrize("field, value", [("channels", 10 ** 9), ("image_size", [10 ** 6, 10 ** 6])])
def test_an_absurd_stored_size_names_the_file_and_its_fields_not_options(tmp_path, monkeypatch, capsys, field, value):
    _, checkpoint = make_checkpoint()
    folder = export_pretrained(checkpoint, tmp_path / "exported")
    config = json.loads((folder / "config.json").read_text())
    config["configs"]["model"][field] = value
    config["configs"]["task"] = {"condition": "label", "classes": ["a", "b", "c"]}  # the model's own h
    (folder / "config.json").write_text(json.dumps(config))
    code, out, err = run_pcae(monkeypatch, capsys, "sample", folder, "--out", tmp_path / "s.png", "--n", 1)
    assert code == 1 and err.strip().count("\n") == 0
    assert str(folder) in err and f"{field} {value}" in err and "would need about" in err
    assert "--" not in err and not (tmp_path / "s.png").exists()
