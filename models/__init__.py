"""PyTorch models of UIG (text encoder, GCN, evaluation protocol); see README "Models, evaluation and the registry"."""
