"""Training attribution models on a generated data set, and the run folder."""
