"""pcae: representation learning with conditional Gated PixelCNN decoders.

Importing the package does not import torch; `pcae.pixelcnn`, `pcae.sampling` and friends do.
"""
__version__ = "0.1.0"
