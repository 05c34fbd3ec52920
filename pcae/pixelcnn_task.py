"""Deprecated: the PixelCNN task moved to pcae.tasks.pixelcnn and `sample_checkpoint` to
pcae.inference. Their names still import from here, with a warning."""
import warnings

from pcae.inference import sample_checkpoint  # noqa: F401
from pcae.tasks.pixelcnn import CONDITIONS, PixelCNNSpec, PixelCNNTask, build_pixelcnn  # noqa: F401

warnings.warn("pcae.pixelcnn_task is deprecated: import from pcae.tasks.pixelcnn (and sample_checkpoint "
              "from pcae.inference)", DeprecationWarning, stacklevel=2)
