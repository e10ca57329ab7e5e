"""Every topic name, in one place. Settings add the deployment's prefix (``selfex.`` by default)."""

EXCLUSION_COMMANDS = "exclusion.commands"  # keyed by the person's primary identifier hash
EXCLUSION_LIFECYCLE = "exclusion.lifecycle"  # keyed by subject: one person's events stay in order
VERIFICATION_INPUTS = "verification.inputs"  # codes, resends, documents, reviews; keyed by exclusion id
VERIFICATION_EVENTS = "verification.events"  # verified / failed / refused; keyed by exclusion id
NOTIFICATION_REQUESTS = "notification.requests"  # keyed by subject
ACCOUNT_EVENTS = "account.events"  # keyed operator_id:account_id
DECISIONS = "decisions"  # keyed operator_id:account_id
ENFORCEMENT = "enforcement"  # keyed operator_id:account_id
DEAD_LETTER = "deadletter"  # what a consumer could not handle, with the reason and original bytes
GATEWAY_REQUESTS = "gateway.requests"  # one record per HTTP request (who, what, when, outcome); keyed by operator

ALL = (
    EXCLUSION_COMMANDS,
    EXCLUSION_LIFECYCLE,
    VERIFICATION_INPUTS,
    VERIFICATION_EVENTS,
    NOTIFICATION_REQUESTS,
    ACCOUNT_EVENTS,
    DECISIONS,
    ENFORCEMENT,
    DEAD_LETTER,
    GATEWAY_REQUESTS,
)
