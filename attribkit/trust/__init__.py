"""Trust outside the closed world: calibration, unknown-attack scores, verdicts."""
