"""From a trained model to a served version: ``streamer models import`` and ``models validate --holdout``.

- ``sources``: what a SOURCE is (a file by kind, an MLflow URI or directory) and the ``SourceModel`` every
  library module gives (``sklearn_source``, ``xgboost_source``, ``lightgbm_source``, ``onnx_graph``,
  ``mlflow_source``: each imported only when a source of its kind is read);
- ``onnx_graph``: the converted graph in the form a card describes (no ZipMap, ``score`` and ``label`` found);
- ``card_writer``: the card's TOML text (also the shipped demo cards' ``[reference]``);
- ``data``: reference and holdout files as the rows serving would feed;
- ``measure``: the conversion proof and the holdout metrics (decided in ``core.conversion_proof`` and
  ``core.holdout``);
- ``importer``: the steps, in order, up to the atomic publish (``adapters.onnx_models.publish_version``).

Nothing here is imported by a worker: a test walks the worker's imports and fails on this package, on pickle
and on joblib.
"""
