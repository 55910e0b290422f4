"""The image every component runs in on a cluster; pin it by digest for production (MLSEC_IMAGE)."""

import os

IMAGE = os.environ.get("MLSEC_IMAGE", "ghcr.io/mlsec/mlsec:0.1.0")
