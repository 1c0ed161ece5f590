"""What each method optimises, stated as data: the loss terms of its training or optimisation objective.

The scorer's metrics are stated the same way (evaluation/own_objectives.py), so that one function can tell which
metric shares network, layers and statistic with which method's objective: a score on a method's own objective is
not evidence that it stylizes better (DESIGN.md "Evaluation"). Torch-free: the method schemas
(methods/schemas/*.py) return these from ``MethodParams.objectives()``, derived from their own settings, so the table
follows a change of layers in params.yaml.

Statistics (``Objective.statistic``):

- ``feature_mse``: MSE between the output's and the content image's features (Gatys et al. 2016 eq. 1);
- ``gram``: a distance between Gram matrices of output and style features (Gatys et al. 2016 eq. 4-5);
- ``meanstd``: a distance between channel means and standard deviations (Huang & Belongie 2017 eq. 12);
- ``style_embedding``: the style vector of Ghiasi et al. 2017's style-prediction network;
- other names (``feature_mse_adain_target``, ``feature_mse_normalised``) for terms no metric shares.

Networks: ``vgg19`` (qualified by the ``encoder.weights`` the method ran on; a per-filter normalisation only rescales
each filter, so the raw and the normalised network count as one: the same features, reweighted) and
``ghiasi_style_predictor``.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_MSE = "feature_mse"
GRAM = "gram"
MEANSTD = "meanstd"
STYLE_EMBEDDING = "style_embedding"
VGG19 = "vgg19"
GHIASI_STYLE_PREDICTOR = "ghiasi_style_predictor"
STYLE_VECTOR = "style_vector"  # the style predictor's 100-number output, its one "layer"


@dataclass(frozen=True)
class Objective:
    """One term of what a method minimises (or, for ``role="uses"``, a network it runs on its inputs).

    Attributes:
        statistic: what is compared (see the module docstring).
        layers: the network layers the term reads (pystiche names; ``style_vector`` for the style predictor).
        network: :data:`VGG19` or :data:`GHIASI_STYLE_PREDICTOR`.
        role: ``optimised`` (Gatys's image optimisation), ``trained`` (a feed-forward method's training loss) or
            ``uses`` (the method itself runs this network: its scores on it are not independent either).
        term: the term's name in the method (``content``, ``style``), for the report's words.
    """

    statistic: str
    layers: tuple[str, ...]
    network: str
    role: str
    term: str

    def describe(self) -> str:
        """e.g. ``trained on: style term, meanstd on relu1_1, relu2_1, relu3_1, relu4_1 (vgg19)``."""
        verb = {"optimised": "optimises", "trained": "is trained on", "uses": "runs"}.get(self.role, self.role)
        return f"{verb} its {self.term} term: {self.statistic} on {', '.join(self.layers)} ({self.network})"
