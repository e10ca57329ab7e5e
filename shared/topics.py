"""Every topic name, in one place. Settings add the deployment's prefix (``selfex.`` by default)."""

EXCLUSION_COMMANDS = "exclusion.commands"  # keyed by the person's primary identifier hash
EXCLUSION_LIFECYCLE = "exclusion.lifecycle"  # keyed by subject: one person's events stay in order
ACCOUNT_EVENTS = "account.events"  # keyed operator_id:account_id
DECISIONS = "decisions"  # keyed operator_id:account_id
ENFORCEMENT = "enforcement"  # keyed operator_id:account_id
DEAD_LETTER = "deadletter"  # what a consumer could not handle, with the reason and original bytes

ALL = (
    EXCLUSION_COMMANDS,
    EXCLUSION_LIFECYCLE,
    ACCOUNT_EVENTS,
    DECISIONS,
    ENFORCEMENT,
    DEAD_LETTER,
)
