"""A person's statement: each of their records as a step with its date and time, in order, as JSON and
as printable HTML (Jinja2). It says what happened and when, never who the person is: identity is
only ever in the audit log as keyed hashes, and the statement shows not even those."""

from collections import Counter
from datetime import datetime
from typing import Any

from jinja2 import Environment, select_autoescape

# The step each event type is, in the words of the statement.
STEPS: dict[str, tuple[str, str]] = {
    "exclusion.request": ("request", "Exclusion requested"),
    "exclusion.lift_request": ("lift", "Lift requested (first contract; not acted on)"),
    "exclusion.cancel": ("cancellation", "Cancellation requested by register staff"),
    "exclusion.requested": ("request", "Request registered, waiting for verification"),
    "exclusion.cooling_off_started": ("activation", "Cooling-off started"),
    "exclusion.activated": ("activation", "Exclusion in force"),
    "exclusion.extended": ("extension", "Exclusion extended"),
    "exclusion.ending_soon": ("notice", "Exclusion ending soon"),
    "exclusion.expired": ("end", "Exclusion ended (expired)"),
    "exclusion.lift_requested": ("lift", "Lift accepted, takes effect later"),
    "exclusion.lift_refused": ("lift", "Lift refused"),
    "exclusion.lifted": ("lift", "Exclusion lifted"),
    "exclusion.cancelled": ("cancellation", "Exclusion cancelled"),
    "verification.code_submitted": ("verification", "Code submitted"),
    "verification.code_resend": ("verification", "New code asked for"),
    "verification.document_submitted": ("verification", "Identity document submitted"),
    "verification.document_reviewed": ("verification", "Identity document reviewed"),
    "verification.lift_request": ("lift", "Lift verification started"),
    "exclusion.verified": ("verification", "Request verified"),
    "verification.lift_verified": ("verification", "Lift verified"),
    "verification.failed": ("verification", "Verification failed"),
    "verification.submission_refused": ("verification", "Submission refused"),
    "verification.progressed": ("verification", "Verification progressed"),
    "account.event": ("decision", "Operator reported account activity"),
    "decision.made": ("decision", "Decision"),
    "enforcement.commanded": ("enforcement", "Operator told to act"),
    "notification.requested": ("notification", "Notification asked for"),
    "notification.delivery_recorded": ("notification", "Notification delivery"),
    "person.contacts_recorded": ("contacts", "Contact details recorded (sealed)"),
    "gateway.request_handled": ("api", "API request"),
    "message.dead_lettered": ("dead_letter", "Message refused and parked"),
}
# What a step shows of its event's payload: facts about the process, nothing that names the person.
SHOWN = (
    "state",
    "jurisdiction",
    "duration",
    "starts_at",
    "ends_at",
    "minimum_until",
    "lift_effective_at",
    "ended_at",
    "channel",
    "attested",
    "reason",
    "method",
    "approved",
    "kind",
    "outcome",
    "code",
    "action",
    "account_id",
    "ends_on",
    "template",
    "recipient",
    "attempt",
    "final",
    "route",
    "status",
    "consumer",
)


def entry(record: dict[str, Any]) -> dict[str, Any]:
    """One step of the statement, from a record as the queries list it."""
    event = record.get("event") or {}
    found = event.get("payload")
    payload: dict[str, Any] = found if isinstance(found, dict) else {}
    step, what = STEPS.get(str(record.get("type")), ("other", str(record.get("type"))))
    details = {name: payload[name] for name in SHOWN if payload.get(name) not in (None, "", [])}
    if isinstance(payload.get("scope"), dict):
        details["scope"] = payload["scope"].get("types")
    return {
        "occurred_at": record.get("occurred_at"),
        "recorded_at": record.get("recorded_at"),
        "step": step,
        "what": what,
        "type": record.get("type"),
        "operator_id": record.get("operator_id"),
        "exclusion_id": payload.get("exclusion_id"),
        "details": details,
        "record": {"id": record.get("id"), "chain": record.get("chain"), "seq": record.get("seq"), "hash": record.get("hash")},
    }


def statement(records: list[dict[str, Any]], *, scope: str, generated_at: datetime) -> dict[str, Any]:
    entries = [entry(r) for r in records]
    return {
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "scope": scope,
        "exclusions": sorted({str(e["exclusion_id"]) for e in entries if e["exclusion_id"]}),
        "steps": dict(sorted(Counter(e["step"] for e in entries).items())),
        "entries": entries,
    }


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Selfex statement</title>
<style>
  body { font: 11pt/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
  h1 { font-size: 16pt; margin-bottom: 0.2em; }
  p.meta { color: #444; margin-top: 0; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
  th { background: #f2f2f2; }
  td.when { white-space: nowrap; font-variant-numeric: tabular-nums; }
  td.details { font-size: 9pt; color: #333; }
  @media print { body { margin: 0; } th { background: none; } }
</style>
</head>
<body>
<h1>Statement of the audit log</h1>
<p class="meta">Generated {{ s.generated_at }} (UTC) &middot; scope: {{ s.scope }} &middot; {{ s.entries|length }} entries
{%- if s.exclusions %} &middot; exclusions: {{ s.exclusions|join(", ") }}{% endif %}</p>
<table>
<thead><tr><th>Date and time (UTC)</th><th>Step</th><th>What happened</th><th>Operator</th><th>Details</th></tr></thead>
<tbody>
{%- for e in s.entries %}
<tr>
<td class="when">{{ e.occurred_at }}</td>
<td>{{ e.step }}</td>
<td>{{ e.what }}</td>
<td>{{ e.operator_id or "" }}</td>
<td class="details">{% for name, value in e.details.items() %}{{ name }}: {{ value }}{% if not loop.last %}; {% endif %}{% endfor %}</td>
</tr>
{%- endfor %}
</tbody>
</table>
<p class="meta">Each entry is a record of the tamper-evident audit log (its chain, position and hash are in the JSON form).</p>
</body>
</html>
"""

_ENVIRONMENT = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_TEMPLATE = _ENVIRONMENT.from_string(TEMPLATE)


def as_html(body: dict[str, Any]) -> str:
    return _TEMPLATE.render(s=body)
