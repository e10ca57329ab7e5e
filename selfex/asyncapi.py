"""The AsyncAPI document of Selfex's topics: what every service consumes and every contract on each topic.

Subscriptions come from the services' own FastStream apps (their handlers' docstrings and argument
models); the messages each topic carries come from the contracts in ``shared/events.py``. Account
events, decisions and enforcement are each on every operator's own channel,
``{prefix}operator.{operator_id}.{kind}`` (a subscription to all of them shows its pattern).
"""

import importlib
from typing import Any, Union

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared import topics
from shared.events import EVENT_TYPES, Event
from shared.settings import Settings

DESCRIPTION = (
    "Selfex's Kafka topics. Every message is the envelope of shared/events.py; the payload is typed by "
    "`type`. Delivery is at least once; ids of follow-on events derive from their cause (uuid5). "
    "Account events, decisions and enforcement commands are on each operator's own channels "
    "(`operator.{operator_id}.account_events`, `.decisions`, `.enforcement`): only that operator writes its "
    "account events and reads its decisions and commands (prefixed Kafka ACLs)."
)


def address(settings: Settings, topic: str) -> str:
    """A contract's channel: its topic, or every operator's own topic of that kind, with the operator as a parameter."""
    return settings.topic(topics.operator_template(topic) if topic in topics.PER_OPERATOR else topic)


def contracts_by_topic() -> dict[str, list[type[Event]]]:
    by_topic: dict[str, list[type[Event]]] = {}
    for model in EVENT_TYPES.values():
        by_topic.setdefault(model.topic, []).append(model)
    return by_topic


def build(settings: Settings | None = None) -> dict[str, Any]:
    from selfex.stack import SERVICES

    settings = settings or Settings()
    brokers = []
    for module_name, kind in SERVICES.values():
        if kind == "stream":
            brokers.append(importlib.import_module(module_name).create_app(settings).broker)
    contracts = KafkaBroker(settings.kafka)
    for topic, models in sorted(contracts_by_topic().items()):
        schema = Union[tuple(models)] if len(models) > 1 else models[0]  # noqa: UP007 — a runtime union
        names = ", ".join(m.model_fields["type"].default for m in models)
        per_operator = " Each operator has its own; `operator_id` names it." if topic in topics.PER_OPERATOR else ""
        contracts.publisher(
            address(settings, topic), schema=schema, title=f"{topic}:messages", description=f"Carries: {names}.{per_operator}"
        )
    spec = AsyncAPI(*brokers, contracts, title="Selfex events", version="0.1.0", description=DESCRIPTION)
    return spec.to_specification().to_jsonable()
