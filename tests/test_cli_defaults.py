"""The CLI's defaults are the library's: one source of truth per default; shared options are
declared once; help texts show what they say (rich markup eats a bare "[faces]")."""
from __future__ import annotations

import dataclasses

import pytest
from helpers import run_pcae

from pcae.cli import app
from pcae.tasks.autoencoder import AutoencoderSpec
from pcae.tasks.pixelcnn import PixelCNNSpec
from pcae.tasks.portrait import PortraitSpec
from pcae.train import TrainConfig


def command(name):
    import typer.main

    group = typer.main.get_command(app)
    return group.commands[name]


def defaults(name) -> dict:
    return {p.name: p.default for p in command(name).params}


def all_commands():
    """(name, click command) of every command, those of the groups (data, index) included."""
    import typer.main

    stack = [("pcae", typer.main.get_command(app))]
    while stack:
        name, cmd = stack.pop()
        yield name, cmd
        stack += [(f"{name} {sub}", c) for sub, c in getattr(cmd, "commands", {}).items()]


TRAIN_FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
SPECS = {"train": PixelCNNSpec, "train-ae": AutoencoderSpec, "train-portraits": PortraitSpec}


@pytest.mark.parametrize("name", ["train", "train-ae", "train-portraits"])
def test_training_options_default_to_train_config(name):
    from pcae.cli.training import TRAINING_OPTIONS

    options = defaults(name)
    for field in set(TRAINING_OPTIONS) - {"steps", "epochs", "resume", "force"}:
        assert options[field] == TRAIN_FIELDS[field], (name, field)
    assert options["steps"] is None and options["epochs"] is None  # None: TrainConfig decides
    assert TrainConfig().steps == TrainConfig.DEFAULT_STEPS and TrainConfig().epochs == 0
    assert f"default {TrainConfig.DEFAULT_STEPS};" in {p.name: p for p in command(name).params}["steps"].help


def test_every_training_command_has_the_same_shared_options():
    """Declared once (pcae.cli.training.TRAINING_OPTIONS): the same names, flags and defaults everywhere."""
    from pcae.cli.training import TRAINING_OPTIONS

    flags = {}
    for name in ("train", "train-ae", "train-portraits"):
        params = {p.name: p for p in command(name).params}
        assert set(TRAINING_OPTIONS) <= set(params), (name, set(TRAINING_OPTIONS) - set(params))
        flags[name] = {k: (tuple(params[k].opts), params[k].default) for k in TRAINING_OPTIONS}
    assert flags["train"] == flags["train-ae"] == flags["train-portraits"]


@pytest.mark.parametrize("name", ["train", "train-ae", "train-portraits"])
def test_model_options_default_to_the_spec(name):
    """Every option named after a field of the command's spec defaults to that field's default;
    train-ae's None ones mean "the spec's" (the face encoders' spec has other widths)."""
    spec, options = SPECS[name](), defaults(name)
    fields = {f.name for f in dataclasses.fields(spec) if f.metadata.get("option", True)}
    checked = fields & set(options)
    none = {"channels", "n_layers", "spatial_cond"}
    for field in checked:
        if name == "train-ae" and field in none:
            assert options[field] is None, field
        else:
            assert options[field] == getattr(spec, field), field
    assert len(checked) >= {"train": 6, "train-ae": 16, "train-portraits": 13}[name], sorted(checked)


def test_train_ae_help_names_both_specs_defaults():
    ae, face = AutoencoderSpec(), PortraitSpec()
    helps = {p.name: p.help for p in command("train-ae").params}
    assert f"(default: {ae.channels}; facenet, dlib: {face.channels}," in helps["channels"]
    assert f"(default: {ae.n_layers}; facenet, dlib: {face.n_layers})" in helps["n_layers"]
    assert ae.spatial_cond and "(default: --spatial-cond;" in helps["spatial_cond"]


def test_compare_decoders_help_shows_compare_config_defaults():
    from eval.compare import QUICK, CompareConfig

    config, options = CompareConfig(), {p.name: p for p in command("compare-decoders").params}
    assert options["data"].default == config.data and str(options["out"].default) == config.out
    assert f"(default {config.steps}; {QUICK['steps']} with --quick)" in options["steps"].help
    assert f"(default {config.lr}" in options["lr"].help


def test_each_spec_is_its_torch_free_settings():
    """issue 36: one source of truth, read by import. A spec adds methods (and PortraitSpec what
    `prepare` finds, which are not options) to its settings; it redeclares no setting."""
    from eval.compare import QUICK, CompareConfig
    from eval.compare_config import QUICK as quick
    from pcae import settings

    for spec, own in ((PixelCNNSpec, settings.PixelCNNSettings), (AutoencoderSpec, settings.AutoencoderSettings),
                      (PortraitSpec, settings.PortraitSettings)):
        assert issubclass(spec, own)
        options = {f.name: f.default for f in dataclasses.fields(spec) if f.metadata.get("option", True)}
        assert options == settings.defaults(own), spec
        assert not set(vars(spec).get("__annotations__", {})) & set(options), spec
    from pcae.faces import DEFAULT_FACE_SIZE
    from pcae.tasks.pixelcnn import CONDITIONS

    assert (CONDITIONS, DEFAULT_FACE_SIZE, QUICK) == (settings.CONDITIONS, settings.DEFAULT_FACE_SIZE, quick)
    assert CompareConfig.__module__ == "eval.compare_config"


def test_no_module_parses_python_source():
    """The CLI reads no defaults out of source text (pcae.cli.common.literal_defaults is gone)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    parsing = []
    for package in ("pcae", "encoders", "embeddings", "eval"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                        (node.value.id, node.attr) in {("ast", "parse"), ("ast", "literal_eval")}:
                    parsing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not parsing, parsing


def test_shared_options_are_declared_once():
    """--data-root, --force, --device ...: one declaration (pcae.cli.common) behind every command."""
    seen = {}
    for name, cmd in all_commands():
        for p in cmd.params:
            if p.opts and p.opts[0] in ("--data-root", "--force", "--seed", "--temperature", "--sampler"):
                seen.setdefault(p.opts[0], set()).add(p.help)
    assert {flag: len(helps) for flag, helps in seen.items()} == dict.fromkeys(seen, 1), seen
    assert len(seen) == 5


def test_train_config_defaults_build():
    config = TrainConfig()
    assert config.steps == 800 and config.lr == 4e-3 and config.ema == 0.999
    assert TrainConfig(epochs=2).steps == 0
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(steps=3, epochs=2)


def test_the_cli_reads_its_defaults_without_importing_torch():
    """`pcae --help` stays fast: the CLI package and TrainConfig (pcae.config) are torch-free."""
    import subprocess
    import sys

    code = "import sys, pcae.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_texts_escape_their_square_brackets():
    """Rich markup takes "[faces]" or "[default: x]" for a style and drops it: every "[" in a help
    text is written "\\[" (typer's own "[default: ...]" and "[required]" are added outside markup)."""
    import re

    bare = []
    for name, cmd in all_commands():
        for where, text in [(name, cmd.help or "")] + [(f"{name} {p.name}", getattr(p, "help", None) or "")
                                                        for p in cmd.params]:
            if re.search(r"(?<!\\)\[", text):
                bare.append(where)
    assert not bare, bare


def test_portrait_help_shows_what_it_says(monkeypatch, capsys):
    code, out, _ = run_pcae(monkeypatch, capsys, "portrait", "--help")
    assert code == 0 and "(default: portraits/PHOTO-NAME.png)" in out, out
    assert "(default: the person's photos" in out, out


def test_a_library_value_error_names_the_options_given(tmp_path, monkeypatch, capsys):
    """The CLI keeps no copy of the library's checks: a library ValueError is one line, exit 1,
    naming as options the arguments the command line gave."""
    from pcae.cli import value_error_line

    assert value_error_line(ValueError("steps must be >= 2, got 1"), ["--steps", "1"]) == \
        "--steps must be >= 2, got 1"
    assert value_error_line(ValueError("n must be >= 1, got 0"), ["--steps=3"]) == "n must be >= 1, got 0"
    code, _, err = run_pcae(monkeypatch, capsys, "train", "--resume", "--force", "--out", tmp_path / "run")
    assert code == 1 and err == "error: --resume and --force exclude each other\n", err
    assert not (tmp_path / "run").exists()


def test_a_library_message_names_the_options_the_user_typed():
    """issue 35: `pcae portrait photo --face-index -1` said `face_index`, a Python parameter."""
    from pcae.cli import cli_terms

    line = "me.jpg: face_index must be in [0, 1) for an image with 1 face(s), got -1"
    assert cli_terms(line, ["portrait", "me.jpg", "--face-index", "-1"]) == \
        "me.jpg: --face-index must be in [0, 1) for an image with 1 face(s), got -1"
    assert cli_terms(line, ["portrait", "me.jpg", "--face-index=-1"]).startswith("me.jpg: --face-index")
    assert cli_terms(line, ["portrait", "me.jpg"]) == line  # not an option given: left as it is
    assert cli_terms("a photo_too small", ["--n", "2"]) == "a photo_too small"
