"""Data validation of the LPR4M annotations, download manifests and images (the ``validate`` stage).

The checks are great-expectations 1.x suites kept in a file-mode project (``gx/`` at the repo
root). The flow, one module per step:

- :mod:`.params`: the ``validate`` section of ``params.yaml`` (thresholds) as a frozen dataclass;
- :mod:`.inputs`: read the annotation files (lenient readers, with their rejects) and manifests;
- :mod:`.images`: decode a sample of the downloaded JPEGs (Pillow verify + load, in processes);
- :mod:`.tables`: vectorised pandas/pyarrow joins turn the inputs into one *check table* per
  entity (queries, gallery images, boxes, manifest rows, ...), with derived boolean and count
  columns for the relational checks;
- :mod:`.suites`: the expectation suites over those tables (thresholds as suite parameters);
- :mod:`.project`: the GX project (data source, assets, suites, validation definitions, the
  checkpoint), written to and checked against ``gx/``;
- :mod:`.runner`: runs the checkpoint and turns its result into a summary and failing ids.

Nothing here imports great_expectations at module level.
"""
