"""Portraits judged by a network that had no part in making them, and their pose and lighting.

A portrait model conditioned on FaceNet embeddings scores itself when FaceNet judges its samples
(and with random FaceNet weights every face maps to nearly the same vector, so that score says
nothing). The independent judge is the other face encoder: dlib's ResNet (encoders/dlib.py), when
the optional pcae[faces] extra is installed.

    identity_judge()      the dlib encoder, or None when it is not installed
    judge_identity(...)   dlib's distance from each portrait to the source photo's face, the
                          fraction it calls the same person (below 0.6), and the ceiling: the
                          source face itself shrunk to the portraits' size and judged the same way
    pose_and_light(...)   per face: yaw, pitch and roll proxies from dlib's 68 landmarks, mean
                          luminance and the left/right luminance ratio; `spread` summarises a set

    portrait_scores(...)  every score `pcae portrait` reports for a set of portraits, below

Scores of portraits of one photo (`portrait_scores`; `e` is the conditioning encoder):
    identity similarity   mean cosine between e(sample) and the conditioning embedding e(source
                          crop); samples are upsampled from S x S to the encoder's crop size by the
                          encoder. `source_similarity` is the same score for the source crop itself
                          downscaled to S x S: the ceiling that resolution allows.
    diversity             mean pairwise L2 distance between the samples' embeddings (FaceNet's are
                          unit vectors, so in [0, 2]); `pixel_diversity`: mean pairwise root-mean-square difference
                          between the samples, in levels (0..255). None for a single sample.
    identity_judge        the independent judge's verdict: dlib for a FaceNet-conditioned model,
                          FaceNet (pretrained weights on this machine) for a dlib-conditioned one
    pose_light            the portraits' pose and lighting spread (dlib), and over `references`
                          (real photos of the person) when given
With random FaceNet weights the similarities say nothing about identity; every output says so.

Portraits are small (32x32 by default) face crops cut by MTCNN: each is upscaled to dlib's
150x150 and aligned by its 5-point predictor run on the whole crop (no detector: a face this
small is below HOG's reach, and the crop is a face by construction).

Pose proxies (documented because 32-pixel faces are too small for a fitted 3-D head model),
from the 68 landmarks of the aligned chip: yaw = horizontal offset of the nose tip from the
eyes' midpoint, over the inter-ocular distance (0 = frontal, sign = direction); pitch = vertical
distance from the eyes' midpoint to the nose tip over that from the eyes to the mouth (larger =
head tilted down); roll = angle of the line through the eye centres, in degrees, measured on the
unaligned upscaled crop. Lighting: mean luminance of the face region (landmark hull's bounding
box) on [0, 1], and the left half's mean over the right half's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)


def _spread_or_none(x: torch.Tensor, rms: bool = False) -> float | None:
    """Mean pairwise distance between the n rows of x (n, d), per coordinate (RMS) if asked; None for n < 2."""
    from eval.metrics import mean_pairwise_distance

    if len(x) < 2:
        return None
    d = float(mean_pairwise_distance(x.double()[None]))
    return d / math.sqrt(x.shape[1]) if rms else d


@torch.no_grad()
def portrait_scores(model, crop: torch.Tensor, source: torch.Tensor, samples: torch.Tensor,
                    h: torch.Tensor, references=()) -> dict:
    """The scores of n portraits drawn given h = model.embed(crop) (see the module docstring).

    Args:
        model: the pcae.portrait.PortraitModel that drew them (its encoder embeds, its size shrinks).
        crop: (3, F, F) the source face crop; source: (1, 3, S, S) it at the portraits' size;
        samples: (n, 3, S, S) uint8; h: (1, D); references: photo paths of the same person.
    Returns:
        the PortraitResult fields identity_similarity, similarities, source_similarity, diversity,
        pixel_diversity, identity_judge, pose_light, reference_pose_light.
    """
    e = model.embed(samples)  # (n, D)
    unit = lambda v: F.normalize(v, dim=-1)  # noqa: E731  FaceNet's are unit vectors already, dlib's nearly
    similarities = (unit(e) @ unit(h[0])).cpu()
    verdict = pose = reference = None
    if model.encoder_name == "facenet":
        judge = identity_judge()
        if judge is not None:
            verdict = judge_identity(judge, crop, source, samples)
        has_dlib = judge is not None
    else:
        judge, has_dlib = facenet_judge(), True
        if judge is not None:
            verdict = judge_identity_facenet(judge, crop, source, samples)
    if has_dlib:  # dlib measures pose and lighting whichever network conditions the model
        pose = spread(pose_and_light(samples))
        if references:  # detect_file gives the one-line errors of a missing or broken photo
            faces = torch.cat([model.shrink(model.facenet.detect_file(r)[0]) for r in references])
            reference = spread(pose_and_light(faces))
    return {"identity_similarity": float(similarities.mean()), "similarities": similarities.tolist(),
            "source_similarity": float(unit(model.embed(source)[0]) @ unit(h[0])),
            "diversity": _spread_or_none(e.cpu()),
            "pixel_diversity": _spread_or_none(samples.flatten(1).float(), rms=True),
            "identity_judge": verdict, "pose_light": pose, "reference_pose_light": reference}


def identity_judge():
    """The dlib face encoder when pcae[faces] is installed, else None."""
    from pcae.utils import PcaeError

    try:
        from encoders import build_encoder

        return build_encoder("dlib")
    except (PcaeError, ImportError):
        return None


def _upscale(crops: torch.Tensor, size: int = 150) -> np.ndarray:
    """(B, 3|1, S, S) uint8 -> (B, size, size, 3) uint8 arrays."""
    x = crops.cpu().expand(-1, 3, -1, -1).float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def aligned_chips(judge, crops: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Face crops (B, 3, S, S) -> (dlib-aligned chips (B, 3, 150, 150), 5-point shapes)."""
    from encoders.dlib import CHIP_SIZE, _dlib, _predictor

    dlib = _dlib()
    chips, shapes = [], []
    for rgb in _upscale(crops, CHIP_SIZE):
        rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        shape = _predictor("landmarks5")(rgb, rect)
        chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=judge.padding)
        chips.append(torch.from_numpy(np.ascontiguousarray(chip.transpose(2, 0, 1))))
        shapes.append(shape)
    return torch.stack(chips), shapes


@torch.no_grad()
def judge_identity(judge, face: torch.Tensor, source: torch.Tensor, samples: torch.Tensor) -> dict:
    """How far dlib puts each portrait from the person whose face they were drawn from.

    Args:
        judge: the dlib encoder (identity_judge()).
        face: (3, F, F) the face crop of the source photo at full resolution (MTCNN's, as the
            portrait model saw it), aligned here by dlib's 5-point predictor.
        source: (1, 3, S, S) the same face at the portraits' size (the ceiling).
        samples: (n, 3, S, S) portraits.
    Returns:
        {"judge", "threshold", "distance", "distances", "same_person", "ceiling_distance",
         "ceiling_same_person"}: Euclidean distances of dlib descriptors (same person below the
        threshold), their mean, and the fraction below it.
    """
    from encoders.dlib import SAME_PERSON

    reference = judge(aligned_chips(judge, face[None])[0])[0]
    ceiling_chip, _ = aligned_chips(judge, source)
    portrait_chips, _ = aligned_chips(judge, samples)
    return _verdict("dlib", SAME_PERSON, reference, judge(ceiling_chip)[0], judge(portrait_chips))


def _verdict(name: str, threshold: float, reference, ceiling, portraits) -> dict:
    """The judge's figures from its embeddings of the source face, of the source at the portraits'
    size (the ceiling) and of the portraits (n, D)."""
    ceiling = float((ceiling - reference).norm())
    distances = (portraits - reference).norm(dim=1)
    return {"judge": name, "threshold": threshold, "distance": float(distances.mean()),
            "distances": [round(float(d), 4) for d in distances],
            "same_person": float((distances < threshold).float().mean()),
            "ceiling_distance": ceiling, "ceiling_same_person": ceiling < threshold}


# Schroff et al. 2015, fig. 1: the L2 distance between FaceNet's unit embeddings, "a threshold
# of 1.1 would classify every pair correctly" (their model; the one published figure to read against)
FACENET_SAME_PERSON = 1.1


def facenet_judge():
    """FaceNet with its pretrained VGGFace2 weights when the weights file is already on this machine,
    else None: the independent judge of dlib-conditioned portraits. It never downloads (a judge
    should not fetch 100 MB unasked; `pcae train-portraits` does, as facenet-pytorch would)."""
    from pcae.utils import PcaeError

    try:
        from encoders.facenet import FaceNetEncoder, pretrained_path

        if not pretrained_path("vggface2").is_file():
            return None
        return FaceNetEncoder("vggface2")
    except (PcaeError, ImportError, OSError):
        return None


def judge_identity_facenet(judge, face: torch.Tensor, source: torch.Tensor, samples: torch.Tensor) -> dict:
    """judge_identity's figures by FaceNet (for a model conditioned on dlib): L2 distances between
    FaceNet's unit embeddings of each portrait and of the source face (dlib's aligned chip, which
    FaceNet takes at its input size), the same person below FACENET_SAME_PERSON."""
    return _verdict("facenet", FACENET_SAME_PERSON, judge(face[None])[0], judge(source)[0], judge(samples))


def _roll(points: np.ndarray) -> float:
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def pose_and_light(crops: torch.Tensor) -> list[dict]:
    """Per face crop (B, 3, S, S): {"yaw", "pitch", "roll", "luminance", "left_right"} (see the
    module docstring); the pose from dlib's 68 landmarks."""
    from encoders.dlib import CHIP_SIZE, _dlib, _predictor

    dlib = _dlib()
    out = []
    for rgb in _upscale(crops, CHIP_SIZE):
        rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        points = np.array([(p.x, p.y) for p in _predictor("landmarks68")(rgb, rect).parts()], float)
        eyes = (points[36:42].mean(0) + points[42:48].mean(0)) / 2
        ocular = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0)) or 1.0
        nose, mouth = points[30], points[48:68].mean(0)
        grey = (rgb.astype(np.float64) @ np.array(LUMA)) / 255.0  # (H, W)
        x0, y0 = np.clip(points.min(0).astype(int), 0, None)
        x1, y1 = np.minimum(points.max(0).astype(int) + 1, grey.shape[::-1])
        face = grey[y0:y1, x0:x1] if (x1 > x0 and y1 > y0) else grey
        half = face.shape[1] // 2
        left, right = face[:, :half].mean() if half else face.mean(), face[:, half:].mean()
        out.append({"yaw": float((nose[0] - eyes[0]) / ocular),
                    "pitch": float((nose[1] - eyes[1]) / max(mouth[1] - eyes[1], 1e-6)),
                    "roll": _roll(points), "luminance": float(face.mean()),
                    "left_right": float(left / right) if right > 0 else None})
    return out


def spread(measures: list[dict]) -> dict:
    """Mean and standard deviation of each pose / lighting figure over a set of faces."""
    out = {}
    for key in ("yaw", "pitch", "roll", "luminance", "left_right"):
        values = np.array([m[key] for m in measures if m.get(key) is not None], float)
        out[key] = {"mean": float(values.mean()) if len(values) else None,
                    "std": float(values.std()) if len(values) else None}
    out["faces"] = len(measures)
    return out
