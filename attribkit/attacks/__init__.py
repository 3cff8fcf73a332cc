"""Attack implementations behind the built-in attack plugins."""

from .margin import logit_margin

__all__ = ["logit_margin"]
