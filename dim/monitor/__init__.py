"""What a run shows while it trains and afterwards: TensorBoard visuals and monitors
(:mod:`.visuals`), the callbacks that write the run's HParams and training-time records
(:mod:`.records`; the records' format is :mod:`dim.run.hparams`), progress lines
(:mod:`.progress`), the filter that keeps third-party warnings quiet (:mod:`.warnings_filter`)
and ``dim-compare``'s reading of run directories (:mod:`.compare`).

Imports :mod:`dim.errors`, :mod:`dim.eval` (features and kNN for the monitors) and
:mod:`dim.run`; never the orchestrator (:mod:`dim.training`) or the CLIs."""
