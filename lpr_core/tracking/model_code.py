"""The code MLflow runs to load a registered LPR retrieval model (models-from-code).

``mlflow.pyfunc.log_model(python_model=<this file>)`` stores this file with the model instead of
a pickle; loading the model executes it, and it only names the model class of
:mod:`lpr_core.tracking.model` (whose ``load_context`` reads the weights with
``torch.load(weights_only=True)``). Nothing else should import this module.
"""

import mlflow.models

from lpr_core.tracking.model import LprRetrievalModel

mlflow.models.set_model(LprRetrievalModel())
