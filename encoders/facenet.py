"""FaceNet face embeddings: MTCNN face crops [2] + InceptionResnetV1 [3] -> 512-d unit vectors.

The portrait model of [1, section 3.3] conditions a PixelCNN on the embedding of a face from a
network trained with a triplet loss. We use facenet-pytorch's port of FaceNet [3] (InceptionResnetV1)
and its MTCNN detector [2]. The embedder is always frozen: `trainable` is False, it stays in eval
mode, its parameters never require grad, and `forward` runs under `no_grad`.

The contract, in two steps:
    1. `detect(pil_image, face_index)` finds a face with MTCNN (the largest one by default; with
       `face_index`, faces are numbered largest first) and returns the crop as uint8 (3, S, S),
       S = `image_size` = 160, plus its detection probability. `detect_file(path)` does the same
       for a file and raises PcaeError "no face found in FILE (best probability p)" when MTCNN
       finds none (p is the best ONet score over all candidates with the last two stages' thresholds
       turned off; 0.0 when PNet proposes nothing), or "FILE: the photo is WxH pixels, too small
       to find a face in" when a side is under min_face_size (MTCNN cannot search it; `detect`
       returns no face). Detection runs on the CPU, on the whole photo (pcae.files.open_image:
       turned upright by its EXIF orientation); `detect_crops` does it for a batch of photos.
    2. `forward(crops)` takes uint8 face crops (B, 3, H, W) (or 1 channel, repeated) of any size,
       resizes them to S x S (bilinear, antialiased), applies facenet-pytorch's
       `fixed_image_standardization` ((x - 127.5) / 128) and embeds them. `embed_crops(x)` takes
       crops already resized and standardised (B, 3, S, S) float, so training can cache crops.

Weights (`weights=`):
    "vggface2" (default) or "casia-webface": facenet-pytorch's own pretrained path; it reads
        `$TORCH_HOME/checkpoints/<file>` (TORCH_HOME defaults to ~/.cache/torch) and, when the
        file is missing, downloads it there with progress, as facenet-pytorch does. Offline (or
        with PCAE_OFFLINE=1, which the tests set) a missing file is a one-line PcaeError that
        names the exact path to put it at.
    a file path: a state dict of InceptionResnetV1 (its `logits.*` classifier keys, if any, are
        dropped).
    "random": random initialisation, for tests and offline dry runs only. The config and the
        preprocessing record it, so every output made with it says so.

References:
    [1] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", 2016,
        arXiv:1606.05328.
    [2] Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
        Networks", 2016, arXiv:1604.02878.
    [3] Schroff et al., "FaceNet: A Unified Embedding for Face Recognition and Clustering", 2015,
        arXiv:1503.03832; facenet-pytorch (Tim Esler), weights converted from David Sandberg's facenet.

Known limits: checkpoints that hold this encoder carry its ~23.5M weights (~94 MB).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pcae.errors import PcaeError, first_line
from pcae.files import load_torch_file, open_image

# facenet-pytorch's pretrained names -> the file its load_weights() looks for in $TORCH_HOME/checkpoints
PRETRAINED_FILES = {
    "vggface2": "20180402-114759-vggface2.pt",
    "casia-webface": "20180408-102900-casia-webface.pt",
}
EMBEDDING_DIM = 512


RANDOM_SEED = 0  # seed of the "random" weights


def pretrained_path(name: str) -> Path:
    """Where facenet-pytorch reads the `name` weights from: $TORCH_HOME/checkpoints/<file>."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
    return Path(get_torch_home()) / "checkpoints" / PRETRAINED_FILES[name]


def standardize(crops: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's fixed_image_standardization: levels in [0, 255] -> (x - 127.5) / 128."""
    return (crops - 127.5) / 128.0


def build_inception(weights: str) -> nn.Module:
    """InceptionResnetV1 with `weights` ("vggface2", "casia-webface", a file, or "random")."""
    from facenet_pytorch import InceptionResnetV1

    if weights == "random":
        # a fixed seed, drawn aside from the global generator: the same "random" weights in every
        # run, so face caches and latents made with them stay comparable
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return InceptionResnetV1()
    if weights in PRETRAINED_FILES:
        path = pretrained_path(weights)
        where = (f"put {path.name} (facenet-pytorch's release) at {path} (the folder follows "
                 f"$TORCH_HOME), or pass --facenet-weights FILE, or --facenet-weights random for "
                 f"untrained weights")
        if not path.is_file():
            if os.environ.get("PCAE_OFFLINE") == "1":  # set by the tests: never touch the network
                raise PcaeError(f"FaceNet {weights} weights not found: {where}")
            # facenet-pytorch's own way: download into $TORCH_HOME/checkpoints, with progress
            try:
                net = InceptionResnetV1(pretrained=weights)
            except Exception as e:  # no network, a proxy, a refused host, a full disk...
                raise PcaeError(f"FaceNet {weights} weights not found and could not be downloaded "
                                f"({first_line(e)}): {where}") from None
        else:
            try:
                net = InceptionResnetV1(pretrained=weights)
            except Exception as e:  # a truncated or foreign file
                raise PcaeError(f"cannot load FaceNet weights {path}: {first_line(e)}") from e
        del net.logits  # the VGGFace2 identity classifier; embeddings do not use it
        return net
    path = Path(weights)
    if not path.is_file():
        raise PcaeError(f"FaceNet weights file {path} does not exist "
                        f"(expected a state dict of facenet-pytorch's InceptionResnetV1)")

    state = load_torch_file(path, "FaceNet weights file (a state dict of InceptionResnetV1)")
    if not isinstance(state, dict):
        raise PcaeError(f"{path} is not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = InceptionResnetV1()
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise PcaeError(f"{path} does not hold InceptionResnetV1 weights: {first_line(e)}") from e
    return net




def open_photo(path):
    """A photo file as an RGB PIL image; one-line PcaeErrors for a missing, unreadable or
    oversized file (pcae.files.open_image; shared by the face encoders)."""

    return open_image(path, "RGB")


SMALLEST_FACE = 40  # pixels: the smallest face either detector finds (HOG upsampled once; MTCNN's 20 with margin)


def detect_photo(encoder, path, face_index: int | None = None):
    """encoder.detect() on a photo file, with one-line PcaeErrors (shared by the face encoders):
    a missing or unreadable file, a face_index out of range, no face found (and how close the
    detector came, `encoder.miss_note`). Returns (crop, score, faces found)."""
    image = open_photo(path)
    try:
        crop, score, faces = encoder.detect(image, face_index)
    except ValueError as e:
        raise PcaeError(f"{path}: {e}") from None
    if crop is None:
        why = encoder.too_small(image)
        if why:
            raise PcaeError(f"{path}: {why}")
        small = (f"; the photo is {image.width}x{image.height} pixels, and faces under about "
                 f"{SMALLEST_FACE} pixels are not found") if min(image.size) < 2 * SMALLEST_FACE else ""
        raise PcaeError(f"no face found in {path} ({encoder.miss_note(score)}{small})")
    return crop, score, faces


def photo_files(ds, rows) -> list[Path] | None:
    """The photo file of each of `rows` of a pcae.data dataset read from a folder (its `files`,
    relative to its origin); None for other sources (an HDF5 file's rows are the photos)."""
    root = Path(ds.info.get("origin") or "")
    if ds.files is None or not root.is_dir():
        return None
    return [root / ds.files[int(i)] for i in rows]


def detect_crops(encoder, images: torch.Tensor, photos: list | None = None) -> list:
    """The face crop of each photo of a batch, None where no face is found (embed's detection).

    Args:
        images: (B, C, H, W) uint8, the batch as loaded; used only when `photos` is None (it is
            resized and centre-cropped, which cuts off a face near the edge of a wide photo).
        photos: the batch's photo files (`photo_files`): the detector sees each whole photo, read
            by open_photo (upright, full size), as `detect_file` (search, portrait) does.
    """
    if photos is not None:
        return [encoder.detect(open_photo(p))[0] for p in photos]
    from torchvision.transforms.functional import to_pil_image

    return [encoder.detect(to_pil_image(img.expand(3, -1, -1)))[0] for img in images]


@functools.lru_cache(maxsize=4)
def mtcnn_detector(min_face_size: int = 20):
    """facenet-pytorch's MTCNN on the CPU (its P/R/O-Net weights ship in the wheel)."""
    from facenet_pytorch import MTCNN
    return MTCNN(min_face_size=min_face_size, select_largest=True).eval()


class FaceNetEncoder(nn.Module):
    """Frozen FaceNet embedder: uint8 face crops (B, 3, H, W) -> (B, 512) unit vectors.

    Args:
        weights: "vggface2", "casia-webface", a state-dict file, or "random" (see the module doc).
        image_size: S, the square crop size MTCNN cuts and the network sees (FaceNet uses 160).
        margin: pixels of margin MTCNN adds around the box, in crop pixels (facenet-pytorch's).
        min_face_size: smallest face MTCNN looks for, in image pixels.
    """

    input = "images"
    detects_faces = True  # detect() / detect_file() cut the face the encoder reads

    def __init__(self, weights: str = "vggface2", image_size: int = 160, margin: int = 0,
                 min_face_size: int = 20):
        super().__init__()
        weights = str(weights)
        if image_size < 75:  # InceptionResnetV1's pooling needs at least 75x75
            raise ValueError(f"image_size must be >= 75, got {image_size}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if min_face_size < 1:
            raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
        if weights not in PRETRAINED_FILES and weights != "random":
            weights = str(Path(weights).expanduser().resolve())
        self.net = build_inception(weights)
        self.weights = weights
        self.image_size, self.margin, self.min_face_size = image_size, margin, min_face_size
        self.dim = EMBEDDING_DIM
        self.unit_norm = True  # its embeddings lie on the unit sphere (what interpolation keeps)
        # Schroff et al. 2015, fig. 1: at an L2 distance of 1.1 between unit embeddings "every
        # pair" of their test set is told apart (their model; the one published figure)
        self.same_person = 1.1
        self.trainable = False
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_config(cls, options: dict, state_dict=None) -> "FaceNetEncoder":
        """With a state dict the weights come from it: build random, and keep the recorded source."""
        if state_dict is None:
            return cls(**options)
        options = dict(options)
        source = options.pop("weights", "random")
        encoder = cls(weights="random", **options)
        encoder.weights = source
        return encoder

    def train(self, mode: bool = True) -> "FaceNetEncoder":
        return super().train(False)  # always frozen: BatchNorm keeps its running statistics

    @property
    def config(self) -> dict:
        return {"name": "facenet", "weights": self.weights, "image_size": self.image_size,
                "margin": self.margin, "min_face_size": self.min_face_size}

    @property
    def preprocessing(self) -> dict:
        S = self.image_size
        random = self.weights == "random"
        return {
            "input": "images",
            "face_crop": f"facenet-pytorch MTCNN, largest face, margin {self.margin}, "
                         f"min_face_size {self.min_face_size}, cropped to {S}x{S}",
            "dtype": "uint8 RGB face crops (B, 3, H, W), resized to "
                     f"{S}x{S} (bilinear, antialiased) inside the encoder",
            "standardization": "(x - 127.5) / 128 (facenet-pytorch fixed_image_standardization)",
            "weights": ("random (NOT pretrained: the embeddings carry no identity)" if random
                        else self.weights),
            "random_weights": random,
        }

    # -- detection ---------------------------------------------------------------------------------

    def detect(self, image, face_index: int | None = None):
        """Find a face in a PIL image with MTCNN.

        Args:
            image: a PIL image (any mode; converted to RGB).
            face_index: which face, numbered largest first; None = the largest.
        Returns:
            (crop, prob, faces): crop uint8 (3, S, S), its detection probability and how many faces
            MTCNN found; or (None, p, 0) when none, p being the best probability over all
            candidates (see the module doc).
        """
        from facenet_pytorch import extract_face

        rgb = image.convert("RGB")
        if self.too_small(rgb):  # MTCNN would fail on it (torch.cat of no scales)
            return None, 0.0, 0
        boxes, probs = mtcnn_detector(self.min_face_size).detect(rgb)
        if boxes is None:
            return None, self.best_probability(rgb), 0
        index = 0 if face_index is None else face_index
        if not 0 <= index < len(boxes):
            raise ValueError(f"face_index must be in [0, {len(boxes)}) for an image with "
                             f"{len(boxes)} face(s), got {face_index}")
        face = extract_face(rgb, boxes[index], self.image_size, self.margin)  # (3, S, S) in [0, 255]
        return face.round().clamp(0, 255).to(torch.uint8), float(probs[index]), len(boxes)

    def too_small(self, image) -> str | None:
        """Why MTCNN cannot search a photo this small at all, else None: its image pyramid starts at
        12 / min_face_size of the photo and PNet needs 12 pixels, so a smaller photo has no scale."""
        if min(image.size) * (12.0 / self.min_face_size) >= 12:  # detect_face's own test
            return None
        return (f"the photo is {image.width}x{image.height} pixels, too small to find a face in "
                f"(the face detector looks for faces of at least {self.min_face_size} pixels)")

    def best_probability(self, rgb) -> float:
        """Highest ONet face score over all candidates, with RNet's and ONet's thresholds off."""
        from facenet_pytorch.models.utils.detect_face import detect_face

        mtcnn = mtcnn_detector(self.min_face_size)
        with torch.no_grad():
            batch_boxes, _ = detect_face(rgb, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                                         [mtcnn.thresholds[0], 0.0, 0.0], mtcnn.factor, mtcnn.device)
        boxes = batch_boxes[0]
        return float(max(boxes[:, 4])) if len(boxes) else 0.0

    def detect_file(self, path, face_index: int | None = None):
        """detect() on an image file, with one-line PcaeErrors for the user's mistakes.

        Returns:
            (crop uint8 (3, S, S), prob, faces found).
        """
        return detect_photo(self, path, face_index)

    def miss_note(self, best: float) -> str:
        """How close detection came, for the "no face found" line."""
        return f"best probability {best:.3f}"

    # -- embedding ---------------------------------------------------------------------------------

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Args:
            crops: (B, 3 or 1, H, W) integer levels in [0, 255], face crops (from `detect`).
        Returns:
            (B, 512) float32 unit vectors.
        """
        if crops.dim() != 4 or crops.shape[1] not in (1, 3):
            raise ValueError(f"crops must have shape (B, 3, H, W) or (B, 1, H, W), "
                             f"got {tuple(crops.shape)}")
        if crops.is_floating_point() or crops.is_complex():
            raise ValueError(f"crops must hold integer levels (uint8), got dtype {crops.dtype}")
        S = self.image_size
        x = crops.to(self.net.last_linear.weight.dtype).expand(-1, 3, -1, -1)  # grey -> RGB
        if tuple(x.shape[2:]) != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return self.embed_crops(standardize(x))

    @torch.no_grad()
    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Args:
            crops: (B, 3, S, S) float, already standardised ((x - 127.5) / 128).
        Returns:
            (B, 512) float32 unit vectors.
        """
        S = self.image_size
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, S, S) or not crops.is_floating_point():
            raise ValueError(f"crops must be float (B, 3, {S}, {S}), got {tuple(crops.shape)} "
                             f"{crops.dtype}")
        return self.net(crops).float()  # InceptionResnetV1 L2-normalises its output
