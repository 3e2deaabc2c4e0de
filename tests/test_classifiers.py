import pytest
import torch

from mtm_engine.classifiers import nearest, predict
from mtm_engine.errors import ConfigError


def test_nearest_finds_the_closest_reference_on_toy_clusters():
    refs = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    points = refs[labels] + 0.5 * torch.randn(60, 2, generator=g)
    assert torch.equal(nearest(points, refs, "euc"), labels)


def test_cosine_and_euclidean_can_disagree():
    refs = torch.tensor([[1.0, 0.0], [10.0, 1.0]])
    point = torch.tensor([[2.0, 0.2]])
    # Euclidean: |p - r0| = 1.02 < |p - r1| = 8.04.  Cosine: p is parallel to r1.
    assert nearest(point, refs, "euc").item() == 0
    assert nearest(point, refs, "cos").item() == 1


def test_named_classifiers_use_centres_embeddings_or_logits():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    C = torch.tensor([[0.0, 1.0], [1.0, 0.0]])           # swapped: the _ce classifiers disagree
    logits = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    kw = dict(centres=centres, class_embeddings=C, logits=logits)
    assert predict("cos", e, **kw).tolist() == [0, 1]
    assert predict("euc", e, **kw).tolist() == [0, 1]
    assert predict("cos_ce", e, **kw).tolist() == [1, 0]
    assert predict("euc_ce", e, **kw).tolist() == [1, 0]
    assert predict("pure", e, **kw).tolist() == [1, 0]


def test_classifier_needing_a_missing_part_is_a_clear_error():
    e = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match="class embeddings"):
        predict("cos_ce", e, centres=e, class_embeddings=None, logits=None)
    with pytest.raises(ConfigError, match="unknown classifier 'knn'"):
        predict("knn", e, centres=e, class_embeddings=None, logits=None)
