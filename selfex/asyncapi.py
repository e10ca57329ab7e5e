"""The AsyncAPI document of Selfex's topics: what every service consumes and every contract on each topic.

Subscriptions come from the services' own FastStream apps (their handlers' docstrings and argument
models); the messages each topic carries come from the contracts in ``shared/events.py``.
"""

import importlib
from typing import Any, Union

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared.events import EVENT_TYPES, Event
from shared.settings import Settings

DESCRIPTION = (
    "Selfex's Kafka topics. Every message is the envelope of shared/events.py; the payload is typed by "
    "`type`. Delivery is at least once; ids of follow-on events derive from their cause (uuid5)."
)


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
        contracts.publisher(settings.topic(topic), schema=schema, title=f"{topic}:messages", description=f"Carries: {names}.")
    spec = AsyncAPI(*brokers, contracts, title="Selfex events", version="0.1.0", description=DESCRIPTION)
    return spec.to_specification().to_jsonable()
