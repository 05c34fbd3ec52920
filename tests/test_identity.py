"""eval/identity.py: the pixel-space identity judge of portraits, on made-up people and on real faces."""
from __future__ import annotations

import torch

from eval.identity import IdentityConfig, IdentityJudge, train_identity_judge

SMALL = IdentityConfig(channels=8, epochs=15, batch_size=8, shift=1)


def people(n_per: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Three made-up "people": a bright bar at three heights of a 16x16 face, with noise."""
    g = torch.Generator().manual_seed(seed)
    images, names = [], []
    for k, name in enumerate(("ann", "bob", "cy")):
        for _ in range(n_per):
            x = torch.randint(0, 60, (1, 16, 16), generator=g)
            x[:, 3 + 4 * k:6 + 4 * k, 2:14] += 180
            images.append(x)
            names.append(name)
    return torch.stack(images).clamp(0, 255).to(torch.uint8), names


def test_the_judge_names_people_it_learned_and_reports_its_ceiling():
    x, names = people(8, seed=0)
    tx, tnames = people(3, seed=1)
    before = torch.random.get_rng_state()
    judge = train_identity_judge(x, names, tx, tnames + [], SMALL)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is left alone
    assert judge.people == ["ann", "bob", "cy"]
    assert judge.accuracy == 1.0 and judge.name(tx) == tnames
    # a round trip through what a checkpoint stores gives the same verdicts
    state = judge.state()
    again = IdentityJudge.from_state(state)
    assert torch.equal(again.predict(tx), judge.predict(tx)) and again.accuracy == judge.accuracy
    assert isinstance(state["state_dict"], dict) and all(isinstance(v, torch.Tensor) for v in state["state_dict"].values())


def test_a_judge_trained_on_noise_is_at_chance_and_says_so():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 1, 16, 16), generator=g, dtype=torch.uint8)
    tx = torch.randint(0, 256, (30, 1, 16, 16), generator=g, dtype=torch.uint8)
    names = ["ann", "bob", "cy"] * 8
    judge = train_identity_judge(x, names, tx, ["ann", "bob", "cy"] * 10, SMALL)
    assert judge.accuracy < 0.7  # no identity in the pixels: the ceiling is low, and reported
    # test faces of people it does not know are left out of its accuracy
    judge = train_identity_judge(x, names, tx, ["zoe"] * 30, SMALL)
    assert judge.accuracy == 0.0 and len(judge.predict(tx)) == 30
