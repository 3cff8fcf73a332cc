"""The paper's three signatures: attack and victim classification, hyperparameter regression."""

from attribkit.hookspecs import hookimpl
from attribkit.model.heads import ClassificationHead, HyperparameterHead
from attribkit.specs import HeadSpec


def _classifier(column: str, branch: str):
    def build(context):
        return ClassificationHead(column, context.label_spaces[column], context.feature_dims[branch], branch)

    return build


@hookimpl
def register_heads(register):
    register(HeadSpec("attack", "classification", lambda cols: "attack" in cols, _classifier("attack", "attack"),
                      description="which attack algorithm (attack/hyperparameter branch)"))
    register(HeadSpec("victim", "classification", lambda cols: "victim" in cols, _classifier("victim", "victim"),
                      description="which victim model (victim branch)"))
    register(HeadSpec("hyperparameter", "regression", lambda cols: any(c.startswith("hp_") for c in cols),
                      lambda context: HyperparameterHead(context),
                      description="attack-conditioned regression of each attack's hyperparameters (eq. 7)"))
