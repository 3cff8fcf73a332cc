"""The MTAA attribution model (paper §3.3–3.4) and its baselines."""

# the stems a backbone can be built with (see backbone.py); here, so that TrainConfig can name
# them without importing timm
STEMS = ("timm", "stride1")
