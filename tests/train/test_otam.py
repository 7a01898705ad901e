import math

import numpy as np
import pytest
import torch

from clipfsar.train.otam import bidirectional_otam, otam, softmin


def reference_otam(d: np.ndarray, lam: float) -> float:
    """The recurrence of DESIGN.md section 3, literally, in float64 with the naive soft-min."""
    L, M = d.shape
    p = np.zeros((L, M + 2))
    p[:, 1:M + 1] = d
    C = np.zeros((L, M + 2))
    for m in range(1, M + 2):
        C[0, m] = p[0, m] + C[0, m - 1]

    def smin(*xs):
        return -lam * math.log(sum(math.exp(-x / lam) for x in xs))

    for l in range(1, L):
        for m in range(1, M + 2):
            preds = [C[l - 1, m - 1], C[l, m - 1]]
            if m in (1, M + 1):
                preds.append(C[l - 1, m])
            C[l, m] = p[l, m] + smin(*preds)
    return C[L - 1, M + 1]


@pytest.mark.parametrize("L,M", [(4, 4), (8, 8), (16, 16), (8, 5), (4, 16)])
@pytest.mark.parametrize("lam", [0.5, 0.1])
def test_otam_matches_reference_recurrence(L, M, lam):
    rng = np.random.default_rng(L * 100 + M)
    d = rng.uniform(0, 2, size=(3, L, M))
    got = otam(torch.from_numpy(d), lam).numpy()
    want = [reference_otam(x, lam) for x in d]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    got_t = otam(torch.from_numpy(d).transpose(-1, -2), lam).numpy()
    np.testing.assert_allclose(got_t, [reference_otam(x.T, lam) for x in d], rtol=1e-10, atol=1e-10)
    both = bidirectional_otam(torch.from_numpy(d), lam).numpy()
    np.testing.assert_allclose(both, np.add(want, [reference_otam(x.T, lam) for x in d]), rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_softmin_finite_in_low_precision(dtype):
    d = torch.full((2, 8, 8), 2.0, dtype=dtype)  # the largest cosine distance everywhere
    out = bidirectional_otam(d, 0.5)
    assert torch.isfinite(out).all()
    ref = 2 * reference_otam(np.full((8, 8), 2.0), 0.5)
    assert abs(float(out[0]) - ref) / ref < 0.02
    naive = -0.5 * torch.log(torch.exp(-torch.tensor([60.0, 61.0], dtype=dtype) / 0.5).sum())
    assert not torch.isfinite(naive)  # what the stable form avoids
    assert torch.isfinite(softmin([torch.tensor(60.0, dtype=dtype), torch.tensor(61.0, dtype=dtype)], 0.5))


def test_otam_prefers_aligned_sequences():
    t = torch.randn(8, 32)
    shuffled = t[torch.randperm(8)]
    dist = lambda a, b: 1 - torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    assert bidirectional_otam(dist(t, t)) < bidirectional_otam(dist(t, shuffled))
