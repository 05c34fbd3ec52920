"""pcae: representation learning with conditional Gated PixelCNN decoders.

The modules by layer, each using only those above it (tests/test_layers.py keeps it so):
    errors, options, config, files, outputs, machine, images, runs
                             user-facing errors; option checks; TrainConfig (torch-free); atomic
                             files and what pcae wrote; folder outputs; memory and CPU; PNGs; runs
    data, formats            data sources and splits; the file formats they read and write
    faces (and `encoders`)   photos -> the face cache; every h comes from an encoder
    pixelcnn, sampling, deconv, autoencoder
                             the models and the samplers
    checkpoint               reading and writing checkpoint files (no model kinds)
    (`eval`: metrics, judge, identity, faces)
    train, task, batches, steps, runfolder, resume, precision
                             the loop and its pieces
    tasks.pixelcnn, tasks.autoencoder, tasks.portrait
                             one task per model kind
    kinds                    the one table of model kinds: checkpoint -> task / model
    inference, portrait (and `eval.compare`, `embeddings`)
                             using checkpoints: evaluate, sample, reconstruct, draw portraits
    cli                      options -> one library call -> a summary

Importing the package does not import torch; `pcae.pixelcnn`, `pcae.sampling` and friends do.
"""
from pcae.files import VERSION as __version__  # noqa: F401


def load_pretrained(path):
    """A pretrained model folder (`pcae export`) or a checkpoint as its model on the CPU, in eval
    mode: (model, checkpoint dict). An exported folder is read without pickle (safetensors)."""
    from pcae.kinds import load_model  # here: `import pcae` imports no torch

    return load_model(path)
