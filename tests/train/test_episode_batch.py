"""Cached-feature training (train/episode_batch.py) is the same loss and the same gradients as the model's own
forward on frames with the image tower frozen."""
import pytest
import torch

from clipfsar.train.episode_batch import EpisodeBatchLoss
from clipfsar.train.factory import create_model_and_transforms
from clipfsar.train.model import ModelConfig

N, K, Q, T = 3, 2, 2, 4  # way, shot, queries per class, frames


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # no dropout, so the two paths see the same network (dropout masks are drawn per call)
    cfg = ModelConfig(arch="tiny", frames=T, attn_dropout=0.0, ffn_dropout=0.0)
    m, _ = create_model_and_transforms(cfg=cfg)
    m.clip.visual.requires_grad_(False)  # the frozen tower of --freeze-backbone
    return m.train()


def _episode(seed: int, vt_classes: int = 7):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(N, K, T, 3, 64, 64, generator=g)
    query = torch.randn(N * Q, T, 3, 64, 64, generator=g)
    labels = torch.arange(N).repeat_interleave(Q)
    classes = torch.randperm(vt_classes, generator=g)[:N]
    vt_labels = torch.cat([classes.repeat_interleave(K), classes[labels]])
    return support, query, labels, classes, vt_labels


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_one_episode_same_loss_and_gradients(model):
    vt_text = torch.randn(7, model.embed_dim)
    support, query, labels, classes, vt_labels = _episode(0)
    model.zero_grad(set_to_none=True)
    ref = model(support, query, labels, vt_text[classes], vt_text, vt_labels, alpha=0.7)
    ref["loss"].backward()
    ref_grads = _grads(model)
    assert set(ref_grads) >= {"vt_scale"} and not any(n.startswith("clip.") for n in ref_grads)

    with torch.no_grad():  # the cache: frame features computed once
        feats = model.encode_frames(torch.cat([support.flatten(0, 1), query]))
    sup_f, qry_f = feats[:N * K].reshape(N, K, T, -1), feats[N * K:]
    model.zero_grad(set_to_none=True)
    out = EpisodeBatchLoss(model)(sup_f[None], qry_f[None], labels[None], vt_text[classes][None], vt_text,
                                  vt_labels[None], alpha=0.7)
    out["loss"].backward()
    for key in ("loss", "loss_fewshot", "loss_videotext"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["logits"][0], ref["logits"], rtol=1e-5, atol=1e-5)
    grads = _grads(model)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_episodes_stacked_equal_their_mean(model):
    """E episodes in one pass = the mean of E one-episode passes (what the trainer accumulated before)."""
    vt_text = torch.randn(7, model.embed_dim)
    eps = [_episode(s) for s in range(3)]
    feats = []
    with torch.no_grad():
        for support, query, *_ in eps:
            f = model.encode_frames(torch.cat([support.flatten(0, 1), query]))
            feats.append((f[:N * K].reshape(N, K, T, -1), f[N * K:]))
    loss = EpisodeBatchLoss(model)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for (sup_f, qry_f), (_, _, labels, classes, vt_labels) in zip(feats, eps):
        one = loss(sup_f[None], qry_f[None], labels[None], vt_text[classes][None], vt_text, vt_labels[None], 1.5)
        (one["loss"] / len(eps)).backward()
        total += float(one["loss"].detach()) / len(eps)
    ref_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    stacked = loss(torch.stack([f[0] for f in feats]), torch.stack([f[1] for f in feats]),
                   torch.stack([e[2] for e in eps]), torch.stack([vt_text[e[3]] for e in eps]), vt_text,
                   torch.stack([e[4] for e in eps]), 1.5)
    stacked["loss"].backward()
    assert float(stacked["loss"].detach()) == pytest.approx(total, rel=1e-5)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_shapes_that_disagree_are_refused(model):
    loss = EpisodeBatchLoss(model)
    d = model.embed_dim
    with pytest.raises(ValueError, match=r"\(E, N, K, T, D\)"):
        loss(torch.zeros(N, K, T, d), torch.zeros(1, Q, T, d), None, None, None, None)
    with pytest.raises(ValueError, match="do not agree"):
        loss(torch.zeros(1, N, K, T, d), torch.zeros(2, Q, T, d), None, torch.zeros(1, N, d), None, None)


def test_shared_cache_is_named_by_tower_and_seed(model):
    """A shared feature cache (TrainConfig.feature_cache) is never reused for another prior or sampling seed."""
    from clipfsar.runtime.video.preprocess import PreprocessConfig
    from clipfsar.train.features import feature_fingerprint
    prep = PreprocessConfig.for_size(64)
    a = feature_fingerprint(model, prep, 0)
    assert a == feature_fingerprint(model, prep, 0) and len(a) == 16
    assert feature_fingerprint(model, prep, 1) != a
    assert feature_fingerprint(model, PreprocessConfig.for_size(32), 0) != a
    w = next(model.clip.visual.parameters())
    with torch.no_grad():
        w.add_(1e-3)
        try:
            assert feature_fingerprint(model, prep, 0) != a
        finally:
            w.sub_(1e-3)


def test_shared_cache_never_gives_a_clip_another_clips_features(model, tmp_path):
    """Two data sets with the same class folders and clip names (a family and its cluttered variant) share one
    cache file: each gets the features of its own clips, and the same clips are read back from the cache."""
    from clipfsar.runtime.video.preprocess import PreprocessConfig
    from clipfsar.train.data import load_split
    from clipfsar.train.features import ClipLoader, cached_split_features
    from clipfsar.train.synth import make_dataset
    loader, cache = ClipLoader(PreprocessConfig.for_size(64), T, 1), tmp_path / "cache.safetensors"
    feats = {}
    for clutter in (0.0, 0.4):
        root = tmp_path / f"app{clutter}"
        make_dataset(root, clips_per_class=1, size=64, length=6, family="appearance", clutter=clutter)
        feats[clutter] = cached_split_features(model, loader, load_split(root, "test"), cache, 1, seed=0)
    assert not torch.allclose(feats[0.0], feats[0.4])
    again = cached_split_features(model, loader, load_split(tmp_path / "app0.0", "test"), cache, 1, seed=0)
    torch.testing.assert_close(again, feats[0.0], rtol=0, atol=0)
