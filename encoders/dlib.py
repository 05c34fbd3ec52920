"""dlib face descriptors: HOG face detection, 5-point alignment, ResNet -> 128-d vectors [1, 2].

A pretrained face embedder that installs offline: dlib as a binary wheel (`dlib-bin`) and
`face-recognition-models` (dlib's ResNet face-recognition model, 99.38 % on LFW; the 5- and
68-point landmark predictors; public domain), both dependencies of pcae.
Same contract as the FaceNet encoder (encoders/facenet.py), so it serves wherever a face encoder
does (embed, search by photo, the identity judge of portraits):

    1. `detect(pil_image, face_index)` finds faces with dlib's HOG frontal detector (the largest
       first), aligns the chosen one with the 5-point landmark predictor and cuts dlib's
       standard 150x150 face chip (padding 0.25): (chip uint8 (3, 150, 150), detector score).
       `detect_file(path)` does the same for a file, with one-line PcaeErrors.
    2. `forward(chips)` takes uint8 aligned chips (B, 3, H, W) (1 channel repeated; resized to
       150x150 when needed) and returns (B, 128) float32 descriptors. Two photos show the same
       person when their descriptors are closer than SAME_PERSON (0.6, Euclidean) [2].

The embedder has no trainable weights (`trainable` False, an empty state dict): the model files
come from the installed face-recognition-models, whose name and sha1 every config records.

References:
    [1] King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10, 2009; dlib.net.
    [2] dlib's dlib_face_recognition_resnet_model_v1 (a ResNet-29 trained with a metric loss on
        about 3 million faces; 99.38 % on the LFW benchmark; same person below 0.6).

Known limits: HOG finds frontal faces of at least ~40 px (80 px without upsampling). Like
FaceNet's, detection sees the whole photo, upright (pcae.files.open_image), in `pcae embed` too.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.facenet import detect_photo
from pcae.errors import PcaeError

EMBEDDING_DIM = 128
CHIP_SIZE = 150  # the aligned chip dlib's ResNet was trained on
SAME_PERSON = 0.6  # dlib's published Euclidean threshold
MODEL_FILES = {"recognition": "dlib_face_recognition_resnet_model_v1.dat",
               "landmarks5": "shape_predictor_5_face_landmarks.dat",
               "landmarks68": "shape_predictor_68_face_landmarks.dat"}
INSTALL_HINT = "pip install dlib-bin face-recognition-models (pcae's dependencies: reinstall pcae)"


def models_folder() -> Path:
    """face-recognition-models' folder of .dat files (found without importing the package, whose
    __init__ needs pkg_resources); PcaeError when it is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise PcaeError(f"the dlib encoder needs face-recognition-models: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _dlib():
    try:
        import dlib
    except ImportError:
        raise PcaeError(f"the dlib encoder needs dlib: {INSTALL_HINT}") from None
    return dlib


@functools.lru_cache(maxsize=None)
def _model_file(kind: str) -> Path:
    path = models_folder() / MODEL_FILES[kind]
    if not path.is_file():
        raise PcaeError(f"{path}: missing from face-recognition-models; reinstall it ({INSTALL_HINT})")
    return path


@functools.lru_cache(maxsize=None)
def model_sha1(kind: str = "recognition") -> str:
    return hashlib.sha1(_model_file(kind).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def _detector():
    return _dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _predictor(kind: str):
    return _dlib().shape_predictor(str(_model_file(kind)))


@functools.lru_cache(maxsize=None)
def _recognizer():
    return _dlib().face_recognition_model_v1(str(_model_file("recognition")))


class DlibFaceEncoder(nn.Module):
    """Frozen dlib face embedder: uint8 aligned face chips (B, 3, H, W) -> (B, 128) descriptors.

    Args:
        upsample: how many times the HOG detector upsamples the photo (1 finds faces of ~40 px).
        padding: margin of the aligned chip around the face, as dlib's get_face_chip takes it.
    """

    input = "images"
    detects_faces = True

    def __init__(self, upsample: int = 1, padding: float = 0.25):
        super().__init__()
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if not 0 <= padding <= 1:
            raise ValueError(f"padding must be in [0, 1], got {padding}")
        _recognizer(), _predictor("landmarks5"), _detector()  # fail now, in one line, if absent
        self.upsample, self.padding = int(upsample), float(padding)
        self.image_size = CHIP_SIZE
        self.dim = EMBEDDING_DIM
        self.unit_norm = False  # dlib's descriptors are not normalised
        self.same_person = SAME_PERSON  # Euclidean distance under which two faces are one person
        self.trainable = False
        self.eval()

    @classmethod
    def from_config(cls, options: dict, state_dict=None) -> "DlibFaceEncoder":
        """Rebuild from a stored config; the installed model must be the one it records."""
        recorded = options.get("model_sha1")
        encoder = cls(**{k: v for k, v in options.items() if k in ("upsample", "padding")})
        if recorded and recorded != model_sha1():
            raise PcaeError(f"these descriptors were made with another dlib face model (sha1 "
                            f"{recorded[:12]}, installed {model_sha1()[:12]}): reinstall that "
                            "face-recognition-models, or embed again")
        return encoder

    def train(self, mode: bool = True) -> "DlibFaceEncoder":
        return super().train(False)

    @property
    def config(self) -> dict:
        return {"name": "dlib", "upsample": self.upsample, "padding": self.padding,
                "model": MODEL_FILES["recognition"], "model_sha1": model_sha1()}

    @property
    def preprocessing(self) -> dict:
        S = CHIP_SIZE
        return {
            "input": "images",
            "face_crop": f"dlib HOG frontal detector (upsample {self.upsample}), largest face, "
                         f"aligned by the 5-point landmark predictor, {S}x{S} chip (padding "
                         f"{self.padding})",
            "dtype": f"uint8 RGB aligned chips (B, 3, {S}, {S}); other sizes are resized",
            "model": f"{MODEL_FILES['recognition']} (face-recognition-models), sha1 {model_sha1()}",
            "distance": f"Euclidean; the same person below {SAME_PERSON}",
            "weights": "pretrained (dlib)",
            "random_weights": False,
        }

    # -- detection ---------------------------------------------------------------------------------

    def faces(self, rgb: np.ndarray):
        """HOG detections of an RGB array (H, W, 3) uint8, largest first: [(rectangle, score)]."""
        rects, scores, _ = _detector().run(rgb, self.upsample, 0.0)
        found = sorted(zip(rects, scores), key=lambda rs: -rs[0].area())
        return found

    def best_score(self, rgb: np.ndarray) -> float:
        """The best HOG score over candidates below the detection threshold (how close it came)."""
        _, scores, _ = _detector().run(rgb, self.upsample, -1.0)
        return float(max(scores)) if len(scores) else float("-inf")

    def align(self, rgb: np.ndarray, rect) -> torch.Tensor:
        """The aligned CHIP_SIZE chip of the face in `rect`, uint8 (3, S, S)."""
        shape = _predictor("landmarks5")(rgb, rect)
        chip = _dlib().get_face_chip(rgb, shape, size=CHIP_SIZE, padding=self.padding)
        return torch.from_numpy(np.ascontiguousarray(chip.transpose(2, 0, 1)))

    def detect(self, image, face_index: int | None = None):
        """Find and align a face in a PIL image.

        Returns:
            (chip uint8 (3, 150, 150), detector score, faces found); or (None, best score below
            the threshold, 0) when no face is found.
        """
        rgb = np.asarray(image.convert("RGB"), np.uint8)
        # one HOG pass down to -1 gives both the detections (score >= 0, what `faces` returns: a
        # weaker candidate never suppresses a stronger one) and, on a miss, how close it came
        rects, scores, _ = _detector().run(rgb, self.upsample, -1.0)
        found = sorted(((r, s) for r, s in zip(rects, scores) if s >= 0.0), key=lambda rs: -rs[0].area())
        if not found:
            return None, float(max(scores)) if len(scores) else float("-inf"), 0
        index = 0 if face_index is None else face_index
        if not 0 <= index < len(found):
            raise ValueError(f"face_index must be in [0, {len(found)}) for an image with "
                             f"{len(found)} face(s), got {face_index}")
        rect, score = found[index]
        return self.align(rgb, rect), float(score), len(found)

    def detect_file(self, path, face_index: int | None = None):
        """detect() on an image file, with one-line PcaeErrors. Returns (chip, score, faces found)."""

        return detect_photo(self, path, face_index)

    def too_small(self, image) -> None:
        """None: HOG scans a photo of any size (in a small one it finds nothing, which
        `detect_photo` says with the photo's size)."""
        return None

    def miss_note(self, best: float) -> str:
        """How close detection came, for the "no face found" line."""
        return f"best HOG score {best:.2f}, threshold 0" if best > float("-inf") else "no face candidate at all"

    def landmarks68(self, chips: torch.Tensor) -> np.ndarray:
        """The 68 landmarks (x, y) of each aligned chip (B, 3, H, W) uint8: (B, 68, 2) float."""
        dlib = _dlib()
        out = []
        for chip in chips:
            rgb = np.ascontiguousarray(chip.expand(3, -1, -1).permute(1, 2, 0).numpy())
            rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
            shape = _predictor("landmarks68")(rgb, rect)
            out.append([(p.x, p.y) for p in shape.parts()])
        return np.asarray(out, np.float64)

    # -- embedding ---------------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Args:
            chips: (B, 3 or 1, H, W) integer levels, aligned face chips (from `detect`).
        Returns:
            (B, 128) float32 descriptors.
        """
        if chips.dim() != 4 or chips.shape[1] not in (1, 3):
            raise ValueError(f"chips must have shape (B, 3, H, W) or (B, 1, H, W), got {tuple(chips.shape)}")
        if chips.is_floating_point() or chips.is_complex():
            raise ValueError(f"chips must hold integer levels (uint8), got dtype {chips.dtype}")
        x = chips.cpu().expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (CHIP_SIZE, CHIP_SIZE):
            x = F.interpolate(x.float(), size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear",
                              align_corners=False, antialias=True).round().clamp(0, 255)
        arrays = [np.ascontiguousarray(c.permute(1, 2, 0).to(torch.uint8).numpy()) for c in x]
        if not arrays:
            return torch.zeros(0, EMBEDDING_DIM)
        vectors = _recognizer().compute_face_descriptor(arrays)
        return torch.tensor(np.asarray([np.asarray(v) for v in vectors]), dtype=torch.float32)
