"""The objective: MI lower bounds as pure functions of score tensors (:mod:`.bounds`), DIM's
local / global / prior terms built from critics and a bound (:mod:`.terms`), and the all-gather
that makes negatives come from the global batch under DDP (:mod:`.distributed`).

Imports only torch, :mod:`dim.errors` and :mod:`dim.nets`; nothing here knows about runs,
datasets or Lightning."""
