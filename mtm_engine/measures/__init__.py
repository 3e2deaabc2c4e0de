"""What is measured of a run's embeddings, as pure functions of tensors: the geometry recorded each epoch
(Section III-B and IV-F; records.METRICS names each measure and its function), and what `mtm eval` measures of
kept weights: how certain the predictions are (certainty) and whether the clusters transfer to held-out classes
(fewshot). Retrieval metrics come from pytorch-metric-learning (metric_learning.py)."""
