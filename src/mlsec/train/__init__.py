"""Train: a PyTorch classifier on the ingested data, measured on a held-out split."""
