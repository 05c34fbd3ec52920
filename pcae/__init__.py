"""pcae: representation learning with conditional Gated PixelCNN decoders.

The layout, one concern per module (the README's "Python API" table says the same):
    pixelcnn, sampling       the model and its samplers
    config, train, resume    every training option (torch-free); the generic loop, in stages;
                             what a resumed run keeps
    kinds                    the one table of model kinds: checkpoint -> task / model
    pixelcnn_task, autoencoder, portrait
                             one task per model kind, beside its model (portrait's data: faces)
    data, faces              data sources; photos -> the face cache
    inference, checkpoint    using any checkpoint; reading and writing them
    images, runs             every image pcae writes; finding run folders
    options, precision, utils
                             checks shared by all commands; --precision auto; errors, atomic files
    cli                      options -> one library call -> a summary
h always comes from an encoder (the top-level `encoders` package).

Importing the package does not import torch; `pcae.pixelcnn`, `pcae.sampling` and friends do.
"""
from pcae.files import VERSION as __version__  # noqa: E402, F401
