"""The MTAA attribution model (paper §3.3–3.4) and its baselines."""
