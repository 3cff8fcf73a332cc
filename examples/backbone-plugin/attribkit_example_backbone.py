"""A backbone plugin: timm's RegNetX-200MF as MTAA's shared layers.

attribkit cuts any timm model whose feature stages are top-level modules
(``feature_info``) into shared layers, a per-task last stage and a low-level
tap for fusion; it checks the cut reproduces ``forward_features``.
"""

from attribkit import BackboneSpec, hookimpl


@hookimpl
def register_backbones(register):
    # no width_kwargs: this backbone trains at width 1 only (`--width 1`)
    register(BackboneSpec("regnetx_002", "regnetx_002", description="timm RegNetX-200MF, pretrained=False"))
