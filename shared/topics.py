"""Every topic name, in one place. Settings add the deployment's prefix (``selfex.`` by default).

What an operator sends and what it receives are on topics of its own, ``operator.{operator_id}.{kind}``
(a real deployment gives each operator's principal prefixed ACLs on them: README, "Kafka ACLs"); the
services read every operator's input topic by pattern, so an operator added later is picked up
without a restart.
"""

import re

EXCLUSION_COMMANDS = "exclusion.commands"  # keyed by the person's primary identifier hash
EXCLUSION_LIFECYCLE = "exclusion.lifecycle"  # keyed by subject: one person's events stay in order
VERIFICATION_INPUTS = "verification.inputs"  # codes, resends, documents, reviews; keyed by exclusion id
VERIFICATION_EVENTS = "verification.events"  # verified / failed / refused; keyed by exclusion id
NOTIFICATION_REQUESTS = "notification.requests"  # keyed by subject
NOTIFICATION_DELIVERIES = "notification.deliveries"  # every attempt and outcome of a notification; keyed by subject
PERSON_CONTACTS = "person.contacts"  # a person's contact details, sealed (Sealer tokens only); keyed by subject
DEAD_LETTER = "deadletter"  # what a consumer could not handle, with the reason and original bytes
GATEWAY_REQUESTS = "gateway.requests"  # one record per HTTP request (who, what, when, outcome); keyed by operator
FORWARDING_EVENTS = "forwarding.events"  # the forwarder's deliveries to the register, and its alerts; keyed by subject

# The kinds of an operator's own topics (``operator.{operator_id}.{kind}``), each keyed operator_id:account_id.
ACCOUNT_EVENTS = "account_events"  # what the operator's platform reports; only the operator writes here
DECISIONS = "decisions"  # blocking's answer to each of them; only the operator reads here
ENFORCEMENT = "enforcement"  # end sessions / lift, for the operator's accounts; only the operator reads here
PER_OPERATOR = (ACCOUNT_EVENTS, DECISIONS, ENFORCEMENT)

# The topics every deployment has (an operator's are made when it is: ``operator_topics``).
ALL = (
    EXCLUSION_COMMANDS,
    EXCLUSION_LIFECYCLE,
    VERIFICATION_INPUTS,
    VERIFICATION_EVENTS,
    NOTIFICATION_REQUESTS,
    NOTIFICATION_DELIVERIES,
    PERSON_CONTACTS,
    DEAD_LETTER,
    GATEWAY_REQUESTS,
    FORWARDING_EVENTS,
)

_operator_prefix = "operator."
# An operator id that can name a topic: no dot (it separates the name's parts), nothing Kafka refuses.
_OPERATOR_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def of_operator(operator_id: str, kind: str) -> str:
    """The topic of kind ``kind`` that belongs to one operator, e.g. ``operator.op-1.decisions``."""
    if kind not in PER_OPERATOR:
        raise ValueError(f"{kind!r} is not an operator's topic")
    if not _OPERATOR_ID.fullmatch(operator_id):
        raise ValueError("an operator id that can name a topic is 1 to 100 letters, digits, '_' or '-'")
    return f"{_operator_prefix}{operator_id}.{kind}"


def operator_template(kind: str) -> str:
    """An operator's topic of this kind with ``{operator_id}`` in place of the operator (for documents)."""
    if kind not in PER_OPERATOR:
        raise ValueError(f"{kind!r} is not an operator's topic")
    return f"{_operator_prefix}{{operator_id}}.{kind}"


def operator_topics(operator_id: str) -> tuple[str, ...]:
    """Every topic of one operator."""
    return tuple(of_operator(operator_id, kind) for kind in PER_OPERATOR)


def route(topic: str, operator_id: str | None) -> str:
    """Where an event of a contract's ``topic`` goes: its operator's own topic for the per-operator kinds."""
    if topic not in PER_OPERATOR:
        return topic
    if operator_id is None:
        raise ValueError(f"an event on {topic!r} names its operator")
    return of_operator(operator_id, topic)


def operator_pattern(prefix: str, *kinds: str) -> str:
    """The regular expression that every operator's topic of these kinds (all, if none is named),
    with the deployment's prefix, matches, and nothing else."""
    if not set(kinds) <= set(PER_OPERATOR):
        raise ValueError(f"{kinds!r} are not all kinds of an operator's topic")
    alternatives = "|".join(re.escape(kind) for kind in kinds or PER_OPERATOR)
    # No braces (a repeat count): FastStream would read one as a parameter of its own.
    return f"{re.escape(prefix + _operator_prefix)}([A-Za-z0-9_-]+)\\.(?:{alternatives})$"


class OperatorTopics:
    """Which operator a topic of one kind belongs to, read from the full topic name (and remembered)."""

    def __init__(self, prefix: str, kind: str) -> None:
        self._pattern = re.compile(operator_pattern(prefix, kind))
        self._of: dict[str, str] = {}

    def operator_of(self, topic: str) -> str:
        """The operator whose topic this is; ``ValueError`` if it is no operator's topic of this kind."""
        operator_id = self._of.get(topic)
        if operator_id is None:
            found = self._pattern.fullmatch(topic)
            if found is None:
                raise ValueError(f"{topic!r} is no operator's topic")
            operator_id = self._of[topic] = found.group(1)
        return operator_id
