"""The figures of portraits: who they show, how far from the photo, how varied, in what pose and light.

Each figure can fail, and each has its ceiling or yardstick beside it:

    named            the fraction of portraits the identity judge (eval/identity.py, a pixel-space
                     classifier that never saw an embedding) names as the source's person, when
                     that person is one the model knows; the judge's accuracy on real test faces
                     is the ceiling (chance is 1 / people).
    dlib distance    dlib's descriptor distance from each portrait to the source face, and the
                     fraction under dlib's same-person threshold 0.6. When the model is conditioned
                     on dlib this is the conditioning network judging, so it is reported beside the
                     identity judge, never instead of it. Ceiling: the source face itself at the
                     portraits' size.
    diversity        pairwise root-mean-square difference between the portraits, in levels (0..255):
                     the mean, the smallest, and how many pairs are near-copies (under
                     NEAR_COPY_RMS); two real photos of one person differ by ~40.
    pose and light   per face, from dlib's 68 landmarks: yaw = horizontal offset of the nose tip
                     from the eyes' midpoint over the eye distance (0 = frontal), pitch = eyes-to-
                     nose over eyes-to-mouth, roll = the eye line's angle in degrees; luminance =
                     mean of the landmarks' bounding box on [0, 1], left/right = its left half's
                     mean over its right half's. `spread` gives mean and std over a set of faces;
                     the portraits' std is read against the std over the person's real photos
                     (stored in the checkpoint, or --reference photos): `pose_ratio` (mean of the
                     yaw and pitch ratios) and `light_ratio` (left/right).

Portraits are small (32x32 by default): each is upscaled to dlib's 150x150 and aligned by its
5-point predictor run on the whole crop (no detector: a face this small is below HOG's reach, and
the crop is a face by construction). Faces pcae trains on are dlib-aligned chips, so their roll
is ~0 by construction; it is reported but not used in the ratios.

    identity_judge()       the dlib encoder, or None when it is not installed
    portrait_scores(...)   every figure `pcae portrait` reports for the portraits of one photo
    judge_test_faces(...)  the same over a run's test faces, summarised (the end of a run)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from encoders import build_encoder
from encoders.dlib import CHIP_SIZE, SAME_PERSON, _dlib, _predictor
from pcae.errors import PcaeError
from pcae.sampling import sample

LUMA = (0.299, 0.587, 0.114)
NEAR_COPY_RMS = 5.0  # levels: two portraits closer than this look the same


def identity_judge():
    """The dlib face encoder when dlib is installed, else None."""
    try:
        return build_encoder("dlib")
    except (PcaeError, ImportError):
        return None


def _dlib_of(model):
    """The dlib encoder that measures a portrait model's faces: its own when it is conditioned on
    dlib, else a new one (None when dlib is not installed)."""
    return model.facenet if model.encoder_name == "dlib" else identity_judge()


def _upscale(crops: torch.Tensor, size: int = 150) -> np.ndarray:
    """(B, 3|1, S, S) uint8 -> (B, size, size, 3) uint8 arrays."""
    x = crops.cpu().expand(-1, 3, -1, -1).float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def aligned_chips(judge, crops: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Face crops (B, C, S, S) -> (dlib-aligned chips (B, 3, 150, 150), 5-point shapes)."""

    dlib = _dlib()
    chips, shapes = [], []
    for rgb in _upscale(crops, CHIP_SIZE):
        rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        shape = _predictor("landmarks5")(rgb, rect)
        chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=judge.padding)
        chips.append(torch.from_numpy(np.ascontiguousarray(chip.transpose(2, 0, 1))))
        shapes.append(shape)
    return torch.stack(chips), shapes


def _roll(points: np.ndarray) -> float:
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def pose_and_light(crops: torch.Tensor) -> list[dict]:
    """Per face crop (B, C, S, S): {"yaw", "pitch", "roll", "luminance", "left_right"} (see the
    module docstring); the pose from dlib's 68 landmarks."""

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


def face_measures(crops: torch.Tensor) -> list[dict] | None:
    """pose_and_light of each face, or None when dlib is not installed."""
    return pose_and_light(crops) if identity_judge() is not None else None


def spread(measures: list[dict]) -> dict:
    """Mean and standard deviation of each pose / lighting figure over a set of faces."""
    out = {}
    for key in ("yaw", "pitch", "roll", "luminance", "left_right"):
        values = np.array([m[key] for m in measures if m.get(key) is not None], float)
        out[key] = {"mean": float(values.mean()) if len(values) else None,
                    "std": float(values.std()) if len(values) else None}
    out["faces"] = len(measures)
    return out


def spread_ratios(portraits: dict, real: dict) -> dict:
    """The portraits' std over the real photos' std: pose (mean of yaw and pitch) and light (left/right)."""
    def ratio(key):
        a, b = portraits[key]["std"], real[key]["std"]
        return None if a is None or not b else a / b

    yaw, pitch = ratio("yaw"), ratio("pitch")
    pose = None if yaw is None or pitch is None else (yaw + pitch) / 2
    return {"pose_ratio": pose, "light_ratio": ratio("left_right")}


def diversity(samples: torch.Tensor) -> dict:
    """Pairwise RMS differences between portraits (n, C, S, S), in levels; None figures for n < 2."""
    if len(samples) < 2:
        return {"rms_mean": None, "rms_min": None, "near_copies": 0, "pairs": 0}
    d = torch.pdist(samples.flatten(1).double()) / math.sqrt(samples[0].numel())
    return {"rms_mean": float(d.mean()), "rms_min": float(d.min()),
            "near_copies": int((d < NEAR_COPY_RMS).sum()), "pairs": len(d)}


def dlib_figures(judge, reference: torch.Tensor, source: torch.Tensor, samples: torch.Tensor) -> dict:
    """dlib distances from each portrait, and from the source at the portraits' size (the
    ceiling), to the source face's descriptor `reference` (D,)."""

    chips, _ = aligned_chips(judge, torch.cat([source, samples]))
    d = (judge(chips) - reference.cpu()).norm(dim=1)
    return {"threshold": SAME_PERSON, "distance": float(d[1:].mean()),
            "distances": [round(float(v), 4) for v in d[1:]],
            "same_person": float((d[1:] < SAME_PERSON).float().mean()), "ceiling_distance": float(d[0])}


def judge_identity(judge, face: torch.Tensor, source: torch.Tensor, samples: torch.Tensor) -> dict:
    """dlib_figures against the descriptor of `face` (3, F, F), a face crop at full resolution
    (aligned here by dlib's 5-point predictor)."""
    return dlib_figures(judge, judge(aligned_chips(judge, face[None])[0])[0], source, samples)


def _named(identity, person: str | None, samples: torch.Tensor) -> dict | None:
    if identity is None:
        return None
    names = identity.name(samples)
    known = person is not None and person in identity.people
    return {"names": names, "named": (sum(n == person for n in names) / len(names)) if known else None,
            "judge_accuracy": identity.accuracy, "people": len(identity.people)}


@torch.no_grad()
def portrait_scores(model, crop: torch.Tensor, source: torch.Tensor, samples: torch.Tensor,
                    h: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
    """Every figure of n portraits drawn given h = model.embed(crop) (see the module docstring).

    Args:
        model: the pcae.tasks.portrait.PortraitModel that drew them.
        crop: (3, F, F) the source face as the encoder cut it; source: (1, C, S, S) it at the
            portraits' size; samples: (n, C, S, S) uint8; h: (D,) the source's embedding.
        reference: (R, C, S, S) real faces of the person, the yardstick of the pose and lighting
            spread; None: the known person's photos, as stored in the checkpoint.
    Returns:
        {"person", "person_distance", "identity", "dlib", "diversity", "pose_light",
         "reference_pose_light", "ratios"}; figures that cannot be had are None.
    """
    person, person_distance = model.person_of(h)
    out = {"person": person, "person_distance": person_distance,
           "identity": _named(model.identity, person, samples), "diversity": diversity(samples),
           "dlib": None, "pose_light": None, "reference_pose_light": None, "ratios": None}
    judge = _dlib_of(model)
    if judge is None:
        return out
    out["dlib"] = (dlib_figures(judge, h, source, samples) if model.encoder_name == "dlib"
                   else judge_identity(judge, crop, source, samples))
    out["pose_light"] = spread(pose_and_light(samples))
    if reference is not None:
        out["reference_pose_light"] = spread(pose_and_light(reference))
    elif person is not None and model.people.get("pose_light"):
        out["reference_pose_light"] = model.people["pose_light"][person]
    if out["reference_pose_light"] is not None:
        out["ratios"] = spread_ratios(out["pose_light"], out["reference_pose_light"])
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


@torch.no_grad()
def judge_test_faces(task, test_ds, n: int, per: int, generator, temperature: float = 1.0) -> dict:
    """The portrait figures over the first n test faces of a run's face cache, `per` portraits
    each, summarised: means over faces, and the fraction of faces that meet each target.

    Args:
        task: a pcae.tasks.portrait.PortraitTask (model, face encoder, identity judge, people).
        test_ds: the cache's test split (labels are cache rows).
    """
    import h5py


    if task.identity is None:
        return {"skipped": "the photos have no people (one folder per person), so no identity judge"}
    count = min(n, len(test_ds))
    images = torch.stack([test_ds[i][0] for i in range(count)])  # (B, C, S, S)
    rows = torch.tensor([test_ds[i][1] for i in range(count)])
    device = next(task.model.parameters()).device
    h, raw = task.h(rows.to(device)), task.encoder(rows).cpu()  # the decoder's h; the embeddings
    samples = sample(task.model, count * per, tuple(images.shape[1:]), h.repeat_interleave(per, 0),
                     temperature, generator).to(torch.uint8).cpu().view(count, per, *images.shape[1:])
    with h5py.File(task.faces["cache"], "r") as f:
        persons = f["persons"].asstr()[:]
        crops = torch.from_numpy(f["crops"][sorted(rows.tolist())])
    crops = crops[np.argsort(np.argsort(rows.numpy()))]  # back in the order of rows
    judge = task.facenet if task.facenet.config["name"] == "dlib" else identity_judge()
    pose_light = task.people.get("pose_light") if task.people else None
    faces = []
    for k in range(count):
        person = persons[int(rows[k])]
        named = _named(task.identity, person, samples[k])
        face = {"person": person, "named": named["named"], "diversity": diversity(samples[k])}
        if judge is not None:
            face["dlib"] = (dlib_figures(judge, raw[k], images[k:k + 1], samples[k]) if judge is task.facenet
                            else judge_identity(judge, crops[k], images[k:k + 1], samples[k]))
            if pose_light:
                face["ratios"] = spread_ratios(spread(pose_and_light(samples[k])), pose_light[person])
        faces.append(face)
    dlib = [f["dlib"] for f in faces if f.get("dlib")]
    ratios = [f["ratios"] for f in faces if f.get("ratios")]
    varied = [max(r["pose_ratio"] or 0, r["light_ratio"] or 0) for r in ratios]
    return {
        "test_faces": count, "portraits_per_face": per, "people": len(task.identity.people),
        "judge_accuracy": task.identity.accuracy,
        "named": _mean(f["named"] for f in faces),
        "dlib_distance": _mean(d["distance"] for d in dlib),
        "dlib_same_person": _mean(d["same_person"] for d in dlib),
        "dlib_ceiling_distance": _mean(d["ceiling_distance"] for d in dlib),
        "rms_mean": _mean(f["diversity"]["rms_mean"] for f in faces),
        "rms_min": min((f["diversity"]["rms_min"] for f in faces if f["diversity"]["rms_min"] is not None),
                       default=None),
        "near_copies": sum(f["diversity"]["near_copies"] for f in faces),
        # medians: a person whose photos barely vary in one figure would make any mean of ratios huge
        "pose_ratio": _median(r["pose_ratio"] for r in ratios),
        "light_ratio": _median(r["light_ratio"] for r in ratios),
        "varied_faces": float(np.mean([v >= 0.5 for v in varied])) if varied else None,
        "faces": faces,
    }
