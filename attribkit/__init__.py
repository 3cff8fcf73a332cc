"""attribkit: adversarial attack attribution (the MTAA paper's reference implementation)."""

__version__ = "0.1.0"
