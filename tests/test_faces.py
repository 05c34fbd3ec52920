"""eval/faces.py: dlib's distances and the pose / lighting measures, on real
photos: the astronaut and transformed copies of it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed")
    from eval.faces import identity_judge

    found = identity_judge()
    assert found is not None
    return found


def face_crop(judge, image, size=64, margin=0.3):
    """A square crop around the largest HOG face (not aligned: pose and roll survive), uint8 (3, s, s)."""
    rgb = np.asarray(image.convert("RGB"))
    rect, _ = judge.faces(rgb)[0]
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    half = (1 + margin) * max(rect.width(), rect.height()) / 2
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    crop = image.convert("RGB").crop(box).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(crop).transpose(2, 0, 1).copy())


def test_identity_judge_tells_the_person_from_others(judge):
    from eval.faces import judge_identity

    photo = Image.open(DATA / "astronaut.jpg")
    face = face_crop(judge, photo, size=150)
    small = face_crop(judge, photo, size=32)[None]
    copies = torch.stack([face_crop(judge, im, size=32) for im in (
        ImageOps.mirror(photo), ImageEnhance.Brightness(photo).enhance(0.6))])
    lfw = np.load(DATA / "lfw_faces.npz")["faces"][:6]
    others = torch.from_numpy(np.stack([np.asarray(Image.fromarray(f).convert("RGB").resize((32, 32)))
                                        for f in lfw]).transpose(0, 3, 1, 2).copy())
    same = judge_identity(judge, face, small, copies)
    assert same["threshold"] == 0.6 and len(same["distances"]) == 2
    assert same["ceiling_distance"] < 0.6 and same["same_person"] == 1.0, same
    different = judge_identity(judge, face, small, others)
    assert different["distance"] > same["distance"] + 0.2 and different["same_person"] <= 1 / 6, different


def test_pose_and_lighting_follow_the_transform(judge):
    from eval.faces import pose_and_light, spread

    photo = Image.open(DATA / "astronaut.jpg")
    crops = torch.stack([face_crop(judge, im) for im in (
        photo, ImageOps.mirror(photo), ImageEnhance.Brightness(photo).enhance(0.5), photo.rotate(15))])
    base, mirror, dark, tilted = pose_and_light(crops)
    assert abs(base["yaw"] + mirror["yaw"]) < abs(base["yaw"] - mirror["yaw"]) + 0.02  # mirrored yaw
    assert dark["luminance"] == pytest.approx(base["luminance"] * 0.5, rel=0.15)
    assert abs(base["left_right"] * mirror["left_right"] - 1) < 0.1  # mirror swaps the halves
    assert abs((tilted["roll"] - base["roll"]) + 15) < 6, (base["roll"], tilted["roll"])  # PIL turns counter-clockwise
    summary = spread([base, mirror, dark, tilted])
    assert summary["faces"] == 4 and summary["luminance"]["std"] > 0.03 and summary["roll"]["std"] > 3
