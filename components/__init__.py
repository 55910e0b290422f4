"""KFP components: one per stage, each a thin wrapper over mlsec.<stage>.task."""
