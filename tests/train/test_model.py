import pytest
import torch

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.train import create_model_and_transforms
from clipfsar.train.backbone import WeightsUnavailableError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("tiny")
    return model, prep


def _episode(model, n=3, k=2, q=4, t=8):
    d = model.embed_dim
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, k, t, d, generator=g), torch.randn(q, t, d, generator=g)


def test_probabilities_are_distributions_and_beta0_is_fewshot(tiny):
    model, _ = tiny
    model.eval()
    support, query = _episode(model)
    text = model.text_features(["a", "b", "c"])
    for beta in (0.0, 0.5, 0.9, 1.0):
        out = model.classify(support, query, text, beta=beta)
        for key in ("p_fewshot", "p_videotext", "p"):
            assert (out[key] >= 0).all()
            torch.testing.assert_close(out[key].sum(-1), torch.ones(4))
    out0 = model.classify(support, query, text, beta=0.0)
    torch.testing.assert_close(out0["p"], out0["p_fewshot"])
    out1 = model.classify(support, query, text, beta=1.0)
    torch.testing.assert_close(out1["p"], out1["p_videotext"])
    T = model.cfg.frames
    torch.testing.assert_close(out0["p_fewshot"], torch.softmax((T - out0["distances"]) / T, -1))


def test_preprocess_facts(tiny):
    _, prep = tiny
    assert prep.image_size == 64 and prep.resize_short == 73
    assert prep.mean[0] == pytest.approx(0.48145466)


def test_gradients_reach_encoder_transformer_scale_not_text(tiny):
    model, prep = tiny
    model.train()
    model.zero_grad()
    s = prep.image_size
    support = torch.randn(2, 1, 8, 3, s, s)
    query = torch.randn(2, 8, 3, s, s)
    text = model.text_features(["x", "y"])
    out = model(support, query, torch.tensor([0, 1]), text, vt_text=text, vt_labels=torch.tensor([0, 1, 0, 1]),
                alpha=1.0)
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["clip.visual.conv1.weight"] is not None and grads["clip.visual.conv1.weight"].abs().sum() > 0
    assert grads["temporal.layers.0.0.fn.to_q.weight"].abs().sum() > 0
    assert grads["temporal.layers.0.1.net.3.weight"].abs().sum() > 0
    assert grads["vt_scale"] is not None and grads["vt_scale"].abs() > 0
    text_params = [n for n, p in model.named_parameters() if n.startswith("clip.") and not n.startswith("clip.visual.")]
    assert text_params and all(grads[n] is None for n in text_params)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in text_params)


def test_official_parameter_names(tiny):
    keys = set(tiny[0].temporal.state_dict())
    for k in ("layers.0.0.norm.weight", "layers.0.0.fn.to_q.weight", "layers.0.0.fn.to_k.weight",
              "layers.0.0.fn.to_v.weight", "layers.0.0.fn.to_out.0.weight", "layers.0.0.fn.to_out.0.bias",
              "layers.0.1.net.0.weight", "layers.0.1.net.3.weight"):
        assert k in keys
    assert "layers.0.0.fn.to_q.bias" not in keys


def test_depth_and_shot_pooling_flags():
    model, _ = create_model_and_transforms("tiny", depth=2, shot_pooling="after", text_in_prototype=False)
    assert len(model.temporal.layers) == 2
    model.eval()
    support, query = _episode(model, k=3)
    text = model.text_features(["a", "b", "c"])
    after = model.prototypes(support, text)
    manual = torch.stack([model.temporal(support[:, j])[:, :8] for j in range(3)]).mean(0)
    torch.testing.assert_close(after, manual)


def test_one_shot_pooling_before_equals_after():
    torch.manual_seed(0)
    before, _ = create_model_and_transforms("tiny", shot_pooling="before")
    after, _ = create_model_and_transforms("tiny", shot_pooling="after")
    after.load_state_dict(before.state_dict())
    before.eval(), after.eval()
    support, _ = _episode(before, k=1)
    text = before.text_features(["a", "b", "c"])
    torch.testing.assert_close(before.prototypes(support, text), after.prototypes(support, text))


def test_text_features_cached_and_frozen(tiny):
    model, _ = tiny
    a = model.text_features(["a circle moving left"])
    assert "a circle moving left" in model._text_cache
    assert not a.requires_grad
    with pytest.raises(ValueError, match="empty"):
        model.text_features(["  "])


def test_bad_shapes_are_clear_errors(tiny):
    model, prep = tiny
    support, query = _episode(model)
    text = model.text_features(["a", "b", "c"])
    with pytest.raises(ValueError, match="6 frames.*T = 8"):
        model.classify(support, query[:, :6], text)
    with pytest.raises(ValueError, match="support dim"):
        model.classify(support, query[..., :32], text)
    with pytest.raises(ValueError, match="text features"):
        model.classify(support, query, text[:2])
    with pytest.raises(ValueError, match="frames must be"):
        model.encode_frames(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="4 frames"):
        model.encode_frames(torch.randn(1, 4, 3, 64, 64))


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown architecture 'ViT-B-61'.*did you mean"):
        create_model_and_transforms("ViT-B-61")


def test_tag_needing_download_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="laion2b_s34b_b79k.*download"):
        create_model_and_transforms("ViT-B-32", weights="laion2b_s34b_b79k", cache_dir=str(tmp_path))


def test_unknown_tag_and_missing_file():
    with pytest.raises(WeightsUnavailableError, match="unknown pretrained tag: 'nosuchtag' for architecture 'RN50'"):
        create_model_and_transforms("RN50", weights="nosuchtag")
    with pytest.raises(WeightsUnavailableError, match="weights file not found"):
        create_model_and_transforms("RN50", weights="/nonexistent/w.safetensors")


def test_local_weights_file_loads_through_open_clip(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(3)
    src, _ = create_model_and_transforms("tiny")
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in src.clip.state_dict().items()}, str(path))
    loaded, _ = create_model_and_transforms("tiny", weights=str(path))
    for k, v in src.clip.state_dict().items():
        assert torch.equal(v, loaded.clip.state_dict()[k])
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        create_model_and_transforms("RN50", weights=str(path))


@pytest.mark.parametrize("arch,dim", [("ViT-B-16", 512), ("RN50", 1024)])
def test_full_size_architectures_build(arch, dim):
    model, prep = create_model_and_transforms(arch)
    assert model.embed_dim == dim
    assert prep.image_size == 224 and prep.resize_short == 256
    assert model.temporal.layers[0][0].fn.to_q.weight.shape == (dim, dim)
    model.eval()
    with torch.no_grad():
        f = model.encode_frames(torch.randn(1, 8, 3, 224, 224))
    assert f.shape == (1, 8, dim)
