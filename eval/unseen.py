"""Portraits of people a model never saw: are they that person, among the other unseen people?

The paper's portrait claim is about unseen faces. A face cache prepared with a held-out fraction
(pcae.faces, split HELD_OUT) keeps whole people out of training. For each held-out person, a few of
their photos are sources: the model draws n portraits given each source's embedding, and two judges
say who each portrait shows, among all the held-out people, by comparing it with each person's
**other** photos (never the source itself: its gallery is the person's photos less the source):

    judge     the identity judge's penultimate features (eval/identity.py): a pixel-space network
              trained on the training people at the portraits' size, which never sees an embedding.
              A portrait is the person whose gallery's mean feature is nearest in cosine. Its
              ceiling is the same judgement of the real source photo at the portraits' size.
    dlib      dlib's descriptor of the portrait (upscaled and aligned, eval.faces) against the mean
              descriptor of each person's gallery, as the face cache holds it (the full photos).
              When the model is conditioned on dlib this is its own conditioning network judging,
              so it is reported beside the judge, never instead of it.

Chance is 1 / the number of held-out people. Diversity and pose and lighting spread are read
against the person's own real photos, as for known people (eval.faces).

    unseen_people(cache)            the held-out people's rows of a face cache
    judge_unseen(model, cache)      every figure above, per source and summarised
    known_person_rates(model, ...)  how often `pcae portrait` calls an unseen photo a known person,
                                    and names a known person's test photo right

Shapes: n portraits per source, C channels, S side, D embedding dim, U held-out people.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from eval.faces import (
    NEAR_COPY_RMS,
    _median,
    aligned_chips,
    diversity,
    identity_judge,
    pose_and_light,
    spread,
    spread_ratios,
)
from pcae.data import convert_images
from pcae.formats import HELD_OUT
from pcae.sampling import sample


def unseen_people(cache) -> dict[str, list[int]]:
    """The cache rows of each held-out person (split HELD_OUT), people with two faces or more."""
    import h5py

    with h5py.File(cache, "r") as f:
        persons, split = f["persons"].asstr()[:], f["split"][:]
    rows: dict[str, list[int]] = {}
    for k in np.flatnonzero(split == HELD_OUT).tolist():
        rows.setdefault(persons[k], []).append(k)
    return {p: r for p, r in sorted(rows.items()) if len(r) >= 2}


def _read_rows(cache, rows: list[int], channels: int):
    import h5py

    order = np.argsort(rows)
    with h5py.File(cache, "r") as f:
        sorted_rows = np.asarray(rows)[order]
        images = f["images"][sorted_rows]
        embeddings = f["embeddings"][sorted_rows]
    back = np.argsort(order)
    return convert_images(torch.from_numpy(images[back]), channels), torch.from_numpy(embeddings[back])


def _nearest(vectors: torch.Tensor, galleries: list[torch.Tensor], cosine: bool) -> torch.Tensor:
    """The index of the gallery whose mean is nearest each vector (B, F): (B,)."""
    means = torch.stack([g.mean(0) for g in galleries])  # (U, F)
    if cosine:
        return (F.normalize(vectors, dim=1) @ F.normalize(means, dim=1).T).argmax(1)
    return torch.cdist(vectors.double(), means.double()).argmin(1)


@torch.no_grad()
def judge_unseen(model, cache, n: int = 8, sources: int = 2, *, seed: int = 0, temperature: float | None = None,
                 guidance: float | None = None, batch: int = 64, progress: Callable[[int, int], None] | None = None,
                 second=None) -> dict:
    """Portraits of the held-out people of `cache`, judged among them (see the module docstring).

    Args:
        model: a pcae.tasks.portrait.PortraitModel trained on the cache's training split.
        cache: its face cache, prepared with a held-out fraction.
        n: portraits per source photo; sources: source photos per person (their first rows).
        temperature, guidance: the sampler's (pcae.sampling.sample); None: the model's own.
        batch: portraits sampled at once.
        progress: called with (portraits drawn, portraits) while sampling.
        second: another, differently trained IdentityJudge (eval.identity): its figures are given
            as "second_judge", so that no recipe is chosen by one judge alone.
    Returns:
        {"people", "sources", "portraits", "chance", "judge" {"portraits", "real"}, "dlib"
        {"portraits", "real"}, "rms_mean", "near_copies", "copies_of_source", "pose_ratio",
        "light_ratio", "varied_sources", "per_source": [...]} (rates in [0, 1]); or {"skipped": why}.
    """
    people = unseen_people(cache)
    if len(people) < 2:
        return {"skipped": "fewer than two held-out people with two photos or more in the face cache "
                           "(train-portraits --holdout-people)"}
    if model.identity is None:
        return {"skipped": "the model has no identity judge (its photos had no person folders)"}
    names = list(people)
    rows = [r for name in names for r in people[name]]
    C, S, _ = model.image_shape
    images, raw = _read_rows(cache, rows, C)  # (R, C, S, S), (R, D)
    at = {r: k for k, r in enumerate(rows)}
    judges = {"judge": model.identity, **({"second_judge": second} if second is not None else {})}
    feats = {name: judge.features(images) for name, judge in judges.items()}  # (R, F) each
    chosen = [(u, r) for u, name in enumerate(names) for r in people[name][:sources]]

    device = next(model.decoder.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    temperature, guidance = model.draw_settings(temperature, guidance)
    h = model.condition(raw[[at[r] for _, r in chosen]].to(device)).repeat_interleave(n, 0)
    drawn = []
    for lo in range(0, len(h), batch):
        drawn.append(sample(model.decoder, len(h[lo:lo + batch]), model.image_shape, h[lo:lo + batch],
                            temperature, generator, guidance=guidance).to(torch.uint8).cpu())
        if progress is not None:
            progress(min(lo + batch, len(h)), len(h))
    portraits = torch.cat(drawn).view(len(chosen), n, C, S, S)

    dlib = identity_judge()
    portrait_feats = {name: judge.features(portraits.flatten(0, 1)).view(len(chosen), n, -1)
                      for name, judge in judges.items()}
    per_source, real_spread = [], {}
    for k, (u, r) in enumerate(chosen):
        # each person's gallery: their photos, less this source
        gallery_rows = [[at[q] for q in people[name] if q != r] for name in names]
        source = images[at[r]][None]
        d = diversity(portraits[k])
        copies = (portraits[k].flatten(1).double() - source.flatten(1).double()).pow(2).mean(1).sqrt()
        item = {"person": names[u], "row": r, "rms_mean": d["rms_mean"], "near_copies": d["near_copies"],
                "copies_of_source": int((copies < NEAR_COPY_RMS).sum())}
        for name in judges:
            galleries = [feats[name][g] for g in gallery_rows]
            item[name] = float((_nearest(portrait_feats[name][k], galleries, cosine=True) == u).float().mean())
            item[f"{name}_real"] = float(_nearest(feats[name][at[r]][None], galleries, cosine=True)[0] == u)
        if dlib is not None:
            chips, _ = aligned_chips(dlib, torch.cat([source, portraits[k]]))
            described = dlib(chips)  # (1 + n, 128)
            nearest = _nearest(described, [raw[g] for g in gallery_rows], cosine=False)
            item["dlib"] = float((nearest[1:] == u).float().mean())
            item["dlib_real"] = float(nearest[0] == u)
            if u not in real_spread:  # the person's own photos: measured once, for all their sources
                real_spread[u] = spread(pose_and_light(images[[at[q] for q in people[names[u]]]]))
            ratios = spread_ratios(spread(pose_and_light(portraits[k])), real_spread[u])
            item.update(ratios)
        per_source.append(item)

    mean = lambda key: float(np.mean([s[key] for s in per_source])) if key in per_source[0] else None  # noqa: E731
    varied = [max(s.get("pose_ratio") or 0, s.get("light_ratio") or 0) for s in per_source]
    return {
        "people": len(names), "photos": len(rows), "sources": len(chosen), "portraits": len(chosen) * n,
        "per_source_portraits": n, "chance": 1 / len(names), "temperature": temperature, "guidance": guidance,
        **{name: {"portraits": mean(name), "real": mean(f"{name}_real")} for name in judges},
        "dlib": {"portraits": mean("dlib"), "real": mean("dlib_real")},
        "rms_mean": mean("rms_mean"), "near_copies": sum(s["near_copies"] for s in per_source),
        "pairs": len(chosen) * math.comb(n, 2),
        "copies_of_source": sum(s["copies_of_source"] for s in per_source),
        "pose_ratio": _median(s.get("pose_ratio") for s in per_source),
        "light_ratio": _median(s.get("light_ratio") for s in per_source),
        "varied_sources": float(np.mean([v >= 0.5 for v in varied])) if dlib is not None else None,
        "per_source": per_source, "portrait_images": portraits, "source_images": images[[at[r] for _, r in chosen]],
    }


def known_person_rates(model, cache) -> dict:
    """How `pcae portrait` names people (PortraitModel.person_of, its calibrated threshold):
    `unseen_called_known`, the fraction of held-out people's photos it calls a known person (the
    threshold is set on these very photos: at most 5 % by construction), and
    `known_named_right`, the fraction of known people's test photos it names right."""
    import h5py

    with h5py.File(cache, "r") as f:
        persons, split = f["persons"].asstr()[:], f["split"][:]
        embeddings = torch.from_numpy(f["embeddings"][:])
    named = lambda rows: [model.person_of(embeddings[k])[0] for k in rows]  # noqa: E731
    unseen = np.flatnonzero(split == HELD_OUT).tolist()
    known = [k for k in np.flatnonzero(split == 1).tolist() if persons[k] in set(model.people["names"])]
    return {"threshold": model.known_threshold,
            "unseen_photos": len(unseen),
            "unseen_called_known": float(np.mean([p is not None for p in named(unseen)])) if unseen else None,
            "known_photos": len(known),
            "known_named_right": float(np.mean([p == persons[k] for p, k in zip(named(known), known)]))
            if known else None}
