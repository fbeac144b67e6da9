"""ICL and hard negative mining against brute-force oracles."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lpr_core.models.losses import LogitScale, contrastive_loss, matching_loss, mine_hard_negatives


def _oracle_infonce(clips, images, scale, labels):
    """Loop over rows: cross-entropy where same-product columns other than the target are dropped."""
    n = len(clips)
    total = 0.0
    for a, b in ((clips, images), (images, clips)):
        for i in range(n):
            cols = [j for j in range(n) if j == i or labels is None or labels[j] != labels[i]]
            logits = torch.stack([scale * torch.dot(a[i], b[j]) for j in cols])
            total += -(logits[cols.index(i)] - torch.logsumexp(logits, 0)) / n
    return total / 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_labels", [False, True])
def test_contrastive_loss_matches_oracle(dtype, with_labels):
    g = torch.Generator().manual_seed(0)
    clips = F.normalize(torch.randn(6, 8, generator=g, dtype=dtype), dim=-1)
    images = F.normalize(torch.randn(6, 8, generator=g, dtype=dtype), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 3, 1]) if with_labels else None
    loss, sim = contrastive_loss(clips, images, torch.tensor(7.0, dtype=dtype), labels)
    expected = _oracle_infonce(clips, images, 7.0, labels.tolist() if with_labels else None)
    torch.testing.assert_close(loss, expected.to(loss.dtype), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sim, clips @ images.t())


def test_perfect_alignment_gives_low_loss_and_shuffled_high():
    eye = torch.eye(5)
    good, _ = contrastive_loss(eye, eye, torch.tensor(50.0))
    bad, _ = contrastive_loss(eye, eye[[1, 2, 3, 4, 0]], torch.tensor(50.0))
    assert good < 1e-6 < 1.0 < bad


def test_logit_scale_is_clamped():
    s = LogitScale(init_temperature=0.07, max_scale=100.0)
    assert math.isclose(float(s().detach()), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert math.isclose(float(s().detach()), 100.0, rel_tol=1e-5)
    with torch.no_grad():
        s.log_scale.fill_(-3.0)
    assert math.isclose(float(s().detach()), 1.0, rel_tol=1e-6)


def test_hard_negatives_match_brute_force():
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(7, 7, generator=g)
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    img_for_clip, clip_for_img = mine_hard_negatives(sim, labels)
    for i in range(7):
        cands = [j for j in range(7) if labels[j] != labels[i]]
        assert int(img_for_clip[i]) == max(cands, key=lambda j: float(sim[i, j]))
        assert int(clip_for_img[i]) == max(cands, key=lambda j: float(sim[j, i]))


def test_hard_negatives_absent_when_one_product():
    a, b = mine_hard_negatives(torch.randn(3, 3), torch.tensor([4, 4, 4]))
    assert a.tolist() == [-1, -1, -1] and b.tolist() == [-1, -1, -1]


def test_matching_loss_pairs_and_gradient():
    from lpr_core.models.heads import PairwiseMatchingDecoder

    torch.manual_seed(0)
    dec = PairwiseMatchingDecoder(16, layers=1, heads=2, max_frame_tokens=6, max_image_tokens=3)
    frames = torch.randn(4, 6, 16, requires_grad=True)
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[1, 3:] = True
    images = torch.randn(4, 3, 16)
    loss, acc = matching_loss(dec, frames, pad, images, torch.randn(4, 4), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= float(acc) <= 1.0
    assert frames.grad.abs().sum() > 0
    # tokens of padded frames take no part
    assert frames.grad[1, 3:].abs().sum() == 0
