"""PyTorch models of UIG (text encoder, GCN, update policy); see DESIGN.md "Models"."""
