"""Registry: signed model versions on S3, immutable, with stage aliases moved only through the gate."""
