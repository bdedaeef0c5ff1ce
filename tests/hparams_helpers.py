"""Read a log dir as TensorBoard's HParams tab does: its own plugin code over the event files."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _context(logdir: Path) -> Any:
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    return backend_context.Context(tb)


def hparams_columns(logdir: Path) -> tuple[list[str], list[str], list[str]]:
    """(hyperparameter names, metric tags, the hyperparameters marked ``differs``) in the order
    the hparams plugin's GetExperiment handler serves them to the HParams tab, which shows the
    first five hyperparameter columns, then the metrics (the tab's ``_computeHParams``)."""
    from tensorboard import context
    from tensorboard.plugins.hparams import api_pb2, get_experiment

    request = api_pb2.GetExperimentRequest(experiment_name="", hparams_limit=1000)
    experiment = get_experiment.Handler(
        context.RequestContext(), _context(logdir), "", request
    ).run()
    names = [h.name for h in experiment.hparam_infos]
    differs = [h.name for h in experiment.hparam_infos if h.differs]
    return names, [m.name.tag for m in experiment.metric_infos], differs


def hparams_sessions(logdir: Path) -> dict[str, dict[str, Any]]:
    """Session name (the run's path under ``logdir``) -> ``{"hparams": {...}, "metrics":
    {tag: value}, "status": str}``, from the hparams plugin's ListSessionGroups handler."""
    from google.protobuf import json_format
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    request = api_pb2.ListSessionGroupsRequest(  # what the HParams tab asks for: every status
        start_index=0, slice_size=1000, allowed_statuses=list(api_pb2.Status.values())
    )
    response = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb), "", request
    ).run()
    sessions: dict[str, dict[str, Any]] = {}
    for group in response.session_groups:
        hparams = {k: json_format.MessageToDict(v) for k, v in group.hparams.items()}
        for session in group.sessions:
            metrics = {
                m.name.tag + (f"@{m.name.group}" if m.name.group else ""): m.value
                for m in session.metric_values
            }
            sessions[session.name] = {
                "hparams": hparams,
                "metrics": metrics,
                "status": api_pb2.Status.Name(session.status),
            }
    return sessions
