"""The AsyncAPI document describes every topic, every contract on it, and every service's subscriptions."""

import json

from selfex.asyncapi import build
from selfex.stack import SERVICES
from shared import topics
from shared.events import EVENT_TYPES, LIFECYCLE_EVENTS


def test_every_contract_is_in_the_document_under_its_topic(settings):
    document = build(settings)
    text = json.dumps(document)
    for type_name, model in EVENT_TYPES.items():
        channel = document["channels"][f"{model.topic}:messages"]
        per_operator = model.topic in topics.PER_OPERATOR
        assert channel["address"] == settings.topic(topics.operator_template(model.topic) if per_operator else model.topic)
        assert type_name in channel["description"]
        assert model.__name__ in text, f"{model.__name__} has no schema"


def test_every_lifecycle_event_is_documented_with_its_docstring(settings):
    schemas = build(settings)["components"]["schemas"]
    for model in LIFECYCLE_EVENTS:
        assert model.__name__ in schemas
        assert schemas[model.__name__].get("description") == model.__doc__.strip()


def test_every_consuming_service_documents_its_subscriptions(settings):
    channels = build(settings)["channels"]
    for name, (_, kind) in SERVICES.items():
        if kind == "stream":
            assert any(key.startswith(f"{name}.") for key in channels), f"{name} documents no subscription"
    assert any(ch["address"] == settings.topic(topics.EXCLUSION_LIFECYCLE) for ch in channels.values())


def test_account_events_decisions_and_enforcement_are_named_as_each_operator_s_own_channels(settings):
    import re

    channels = build(settings)["channels"]
    for kind in topics.PER_OPERATOR:
        assert channels[f"{kind}:messages"]["address"] == f"{settings.topic_prefix}operator.{{operator_id}}.{kind}"
    blocking = channels["blocking.account_events"]["address"]  # a subscription to every operator's input topic
    assert re.match(blocking, settings.topic(topics.of_operator("op-1", topics.ACCOUNT_EVENTS)))
    assert not re.match(blocking, settings.topic(topics.of_operator("op-1", topics.DECISIONS)))
