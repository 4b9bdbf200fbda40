"""Fall classification: shape features of pendant impact windows and a linear model.

The pendant (``device_profiles.pendant_trigger``) uploads an acceleration window around
each impact; :class:`~stream.fall.model.FallClassifier` scores it. The shipped model lives
in ``stream/fall/model/fall_model.json``; its card is ``stream/fall/MODEL_CARD.md``
(a copy of ``docs/fall_model_card.md``).
"""

from stream.fall.errors import FallDataError, FallError, ModelError, ModelVersionError
from stream.fall.model import FallAssessment, FallClassifier

__all__ = [
    "FallAssessment",
    "FallClassifier",
    "FallDataError",
    "FallError",
    "ModelError",
    "ModelVersionError",
]
