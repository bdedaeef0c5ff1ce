"""A training run's directory and everything that keeps it safe: the one-writer lock and
writability checks (:mod:`.directory`), atomic writes and disk-full handling (:mod:`.diskio`),
checkpoints and encoder files (:mod:`.checkpoints`), graceful stop, exact resume and the run's
progress (:mod:`.reliability`), the run's records of its hyperparameters and results, read by
TensorBoard's HParams tab and ``dim-compare`` (:mod:`.hparams`), and the precision the run
computes in (:mod:`.precision`).

Imports only :mod:`dim.errors`, :mod:`dim.nets` and the libraries; never the orchestrator
(:mod:`dim.training`) or the CLIs."""
