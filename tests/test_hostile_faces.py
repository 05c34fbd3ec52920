"""Photos that are hard on the face path: a face off the centre of a wide photo, a photo too small
for any face, a JPEG stored sideways with an EXIF orientation. Real photos (tests/data), dlib's
pretrained model and MTCNN, all offline on the CPU."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import run_pcae
from PIL import Image

from pcae.errors import PcaeError

DATA = Path(__file__).parent / "data"
CROP = 80  # FaceNet crop side in these tests (InceptionResnetV1 needs >= 75; 160 is 4x slower)


@pytest.fixture(scope="module")
def facenet():
    """FaceNet with (seeded) random weights: MTCNN, which all these tests exercise, needs none."""
    from encoders import build_encoder
    return build_encoder("facenet", weights="random", image_size=CROP)


def needs_dlib():
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models is not installed")


def test_embed_keeps_a_face_near_the_edge_of_a_wide_photo_and_agrees_with_search(tmp_path, monkeypatch, capsys):
    """`pcae embed --encoder dlib` detects in the whole photo, as `pcae search` does: a face near the
    left edge of a 900x300 photo (which a 256x256 centre crop would cut off) is embedded, and its
    latent is the one search computes for the same photo."""
    needs_dlib()
    from embeddings.folder import LATENTS
    from embeddings.search import embed_query_image
    from embeddings.store import LatentStore

    photos = tmp_path / "photos"
    photos.mkdir()
    wide = Image.new("RGB", (900, 300), (128, 128, 128))
    wide.paste(Image.open(DATA / "astronaut.jpg").convert("RGB").resize((288, 288)), (0, 6))  # face at x ~100-150
    photo = photos / "left-face.png"  # a name in the train split (pcae.data.is_test_path)
    wide.save(photo)
    out = tmp_path / "lat"
    code, text, err = run_pcae(monkeypatch, capsys, "embed", "--encoder", "dlib", "--data", f"folder:{photos}",
                               "--out", out)
    assert code == 0, err
    infos = json.loads((out / "index_infos.json").read_text())
    assert infos["count"] == 1 and infos["skipped"] == 0, infos
    with LatentStore(out / LATENTS) as store:
        stored, meta = store.latents[:], store.meta
        assert list(store.column("files", [0])) == ["left-face.png"]
    np.testing.assert_allclose(stored, embed_query_image(meta, photo), atol=1e-6)
    code, text, err = run_pcae(monkeypatch, capsys, "search", out, photo, "-k", 1, "--json")
    assert code == 0, err
    (found,) = json.loads(text)["neighbours"]
    assert found["file"] == "left-face.png" and found["distance"] < 1e-8, found


def test_a_photo_too_small_for_a_face_is_one_line_naming_it_and_its_size(facenet, tmp_path, monkeypatch, capsys):
    """MTCNN cannot search a photo smaller than its smallest face (20 px): detection says so in one
    line naming the file and its size (no torch.cat error), in `portrait` and `train-portraits`
    alike; detect() itself reports no face, so `embed` skips such a photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    face = Image.open(DATA / "astronaut.jpg").convert("RGB")
    face.resize((128, 128)).save(photos / "face.jpg")
    face.resize((128, 128)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "face_flip.jpg")  # a test face
    tiny = photos / "tiny.png"
    face.resize((12, 12)).save(tiny)
    too_small = rf"{re.escape(str(tiny))}: the photo is 12x12 pixels, too small to find a face in"

    with pytest.raises(PcaeError, match=f"^{too_small}") as e:  # the shared detection of a file
        facenet.detect_file(tiny)
    assert "\n" not in str(e.value)
    crop, prob, found = facenet.detect(face.resize((19, 40)))  # the image path: no face, no error
    assert crop is None and prob == 0.0 and found == 0

    # train-portraits skips it, naming why; a folder of nothing else fails in one line
    run, common = tmp_path / "run", ["--facenet-weights", "random", "--facenet-crop-size", CROP, "--image-size", 8,
                                     "--steps", 1, "--batch-size", 1, "--channels", 6, "--n-layers", 1,
                                     "--first-kernel-size", 3, "--n-samples", 0, "--eval-every", 0,
                                     "--checkpoint-every", 0, "--judge-images", 0]
    code, text, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{photos}", "--out", run,
                               "--cache", tmp_path / "faces.h5", *common)
    assert code == 0, err
    assert "skipped tiny.png: the photo is 12x12 pixels, too small to find a face in" in text, text
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "tiny.png").write_bytes(tiny.read_bytes())
    code, text, err = run_pcae(monkeypatch, capsys, "train-portraits", "--data", f"folder:{alone}", "--out",
                               tmp_path / "run2", "--cache", tmp_path / "faces2.h5", *common)
    assert code == 1 and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert "tiny.png: the photo is 12x12 pixels, too small to find a face in" in err, err
    # portrait: one line, exit 1
    code, text, err = run_pcae(monkeypatch, capsys, "portrait", tiny, "--n", 1, "--checkpoint", run / "last.pt",
                               "--out", tmp_path / "g.png")
    assert code == 1 and err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert re.search(too_small, err) and "torch.cat" not in err, err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_jpeg_stored_sideways_with_an_exif_orientation_is_read_upright(facenet, orientation, tmp_path):
    """A phone's JPEG: pixels stored turned by 90 degrees, with the EXIF orientation tag that makes a
    viewer show it upright. Every way the face code reads a photo (a file's detection for portrait
    and search, the face cache's photos, embed's batches) finds the face with the same probability
    and box as in the same pixels turned upright."""
    from encoders.facenet import detect_crops
    from pcae.faces import list_photos

    upright = Image.open(DATA / "astronaut.jpg").convert("RGB")
    # orientation 6: the viewer turns it 90 degrees clockwise, so it is stored turned anticlockwise
    stored, back = {6: (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270),
                    8: (Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90)}[orientation]
    folder = tmp_path / "photos"
    folder.mkdir()
    sideways = folder / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored).save(sideways, quality=95, exif=exif)
    with Image.open(sideways) as im:  # the same decoded pixels, turned upright losslessly, no tag
        assert im.getexif().get(0x0112) == orientation
        reference = tmp_path / "upright.png"
        im.convert("RGB").transpose(back).save(reference)

    want_crop, want_prob, want_found = facenet.detect_file(reference)
    assert want_prob > 0.95 and want_found == 1
    crop, prob, found = facenet.detect_file(sideways)
    assert prob == want_prob and found == want_found and crop.equal(want_crop)
    (photo,), _, _ = list_photos(f"folder:{folder}")  # the face cache's reader (train-portraits)
    crop, prob, _ = facenet.detect(photo.load())
    assert prob == want_prob and crop.equal(want_crop)
    (crop,) = detect_crops(facenet, None, [sideways])  # embed's reader
    assert crop.equal(want_crop)
    with Image.open(sideways) as im:  # the stored pixels as they are: not the upright face
        raw = facenet.detect(im)
    assert raw[0] is None or not raw[0].equal(want_crop)


def test_two_portrait_commands_into_one_samples_folder_the_second_fails(tmp_path):
    """The check that a set exists is made under the folder's lock, with the write: the first
    command's portraits are kept, the second says so (issue 35)."""
    import torch

    from pcae.errors import PcaeError
    from pcae.portrait import PortraitResult, save_samples

    def result(level):
        return PortraitResult(photo="p.jpg", probability=1.0, faces_found=1, face_index=0,
                              source=torch.zeros(1, 1, 4, 4, dtype=torch.uint8),
                              samples=torch.full((2, 1, 4, 4), level, dtype=torch.uint8), random_weights=False,
                              facenet_weights="dlib", sampler="cached", seed=0, temperature=1.0)

    folder = tmp_path / "drawn"
    save_samples(result(10), folder)  # the first command, which found no folder at its start
    with pytest.raises(PcaeError, match="already holds portraits"):
        save_samples(result(200), folder)  # the second, which also found none at its start
    assert np.asarray(Image.open(folder / "sample_000.png")).max() == 10
    save_samples(result(200), folder, force=True)
    assert np.asarray(Image.open(folder / "sample_000.png")).max() == 200


def test_an_iphone_heic_photo_is_read_like_a_jpeg(tmp_path):
    """HEIC is the default photo format of iPhones (issue 35): read through pillow-heif."""
    from pillow_heif import register_heif_opener

    from pcae.files import open_image

    register_heif_opener()  # to write the file; pcae registers the reader itself
    image = Image.new("RGB", (64, 48), (200, 100, 50))
    image.save(tmp_path / "IMG_0001.HEIC", format="HEIF")
    read = open_image(tmp_path / "IMG_0001.HEIC", "RGB")
    assert read.size == (64, 48)
    assert np.abs(np.asarray(read, float).mean((0, 1)) - (200, 100, 50)).max() < 8


def test_a_photo_that_cannot_be_read_is_still_listed(tmp_path, monkeypatch):
    """The face cache's listing hashes every photo's contents; a photo another user owns (mode 600:
    the tests run as root, so reading is refused here by hand) is listed, not a crash, and the
    listing tells it from the readable photo (its face is then skipped, with the reason, as before)."""
    import errno

    from pcae.faces import list_photos

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes((DATA / "astronaut.jpg").read_bytes())
    readable = list_photos(f"folder:{folder}")[2]
    real = Path.read_bytes

    def read_bytes(path):
        if path.name == "b.jpg":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    photos, _, listing = list_photos(f"folder:{folder}")
    assert [p.name for p in photos] == ["a.jpg", "b.jpg"] and listing != readable
