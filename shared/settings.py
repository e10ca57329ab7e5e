"""Settings from ``SELFEX_*`` environment variables (and a ``.env`` file, if present)."""

import base64
import binascii
import json
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Public, committed values: what a development stack on the embedded servers runs with, and what no
# other deployment may (``Settings.require_secrets``).
DEVELOPMENT_HASH_SECRET = "selfex-development-secret-change-me"
DEVELOPMENT_ENCRYPTION_KEYS = "e1:c2VsZmV4LWRldi1rZXktMDEyMzQ1Njc4OWFiY2RlZiE="
MIN_HASH_SECRET_CHARS = 16
MAKE_ONE = "`selfex secrets generate` prints fresh values"


class InsecureSettingsError(RuntimeError):
    """A secret is missing, the public development default, or too weak, outside development."""


class Settings(BaseSettings):
    """One deployment's configuration; every service builds what it needs from it."""

    model_config = SettingsConfigDict(env_prefix="SELFEX_", env_file=".env", extra="ignore")

    # Where the servers are. Empty means "start the embedded ones" for `selfex up`.
    kafka_bootstrap: str = ""
    mongo_uri: str = ""
    # Each service owns a database: ``<mongo_db>_<service>`` (selfex_registration, selfex_gateway, …),
    # unless named here, e.g. SELFEX_MONGO_DATABASES='{"gateway": "gateway_eu"}'.
    mongo_db: str = "selfex"
    mongo_databases: dict[str, str] = Field(default_factory=dict)

    # Kafka behaviour. Idempotence is on for real Kafka; Tansu does not implement InitProducerId.
    kafka_idempotence: bool = False
    topic_prefix: str = "selfex."
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # A consumer joins its group in about half this time on Tansu; real Kafka needs at least 6000.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    # A consumer that stops leaves its group at once (real Kafka). Off for the embedded broker: after
    # a LeaveGroup, Tansu goes on naming the departed member as the group's leader, so the next
    # members wait for an assignment nobody makes (measured: up to 220 s); a member that just stops
    # is expired after the session timeout instead, and the group forms again within seconds.
    kafka_leave_group_on_stop: bool = True
    # Metadata older than this is fetched again: a consumer of every operator's topics (a pattern)
    # starts reading a new operator's topic within about this long after the topic is made.
    kafka_metadata_max_age_ms: int = Field(default=5000, ge=100)

    # Embedded infrastructure (`selfex infra up` / `selfex up` without named servers).
    data_dir: str = ".selfex"
    embedded_kafka_port: int = 9092
    embedded_mongo_port: int = 27017

    # A development stack: the committed secrets below are accepted. Set by `selfex up` when it starts
    # the embedded servers; never set it for a deployment that holds anyone's data.
    development: bool = False

    # Identity hashing: HMAC-SHA-256 with a deployment secret, and its key id.
    hash_secret: SecretStr = SecretStr(DEVELOPMENT_HASH_SECRET)
    hash_key_id: str = "k1"
    # Rotation: the keys added since, oldest first, "id:secret,...": each hashes the form before it,
    # the newest makes every new hash, and `selfex rehash` re-keys what is stored (docs/adr/0005).
    # A key is never taken out of the chain: the newest form is computed through all of them.
    hash_next_secrets: SecretStr = SecretStr("")

    # Sealing (AES-256-GCM) of contact details, documents and codes in transit: "id:base64key,...".
    encryption_keys: SecretStr = SecretStr(DEVELOPMENT_ENCRYPTION_KEYS)
    encryption_key_id: str = "e1"

    # Verification's timer (expired codes): seconds between rounds; 0 leaves the ticking to the caller.
    verification_timer_seconds: float = Field(default=5.0, ge=0)
    # Registration's lifecycle timers (activation, reminder, expiry, lift, timeout) and outbox relay:
    # seconds between passes; 0 leaves the ticking to the caller.
    registration_timer_seconds: float = Field(default=5.0, ge=0)

    # Blocking decides only from a view known to be current: past this many seconds without proof
    # that its view has every lifecycle event published, it answers UNAVAILABLE and is not ready.
    blocking_view_max_lag_seconds: float = Field(default=5.0, gt=0)
    # Each blocking instance stores a snapshot of its view this often (and once soon after a start
    # that found none), so that a restart loads a few large documents; 0 writes none.
    blocking_snapshot_seconds: float = Field(default=600.0, ge=0)

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # Per operator key, across the whole deployment: at most the burst in any window of burst / rate
    # seconds (a moving window; 429 past it). Each gateway replica enforces its share of it.
    gateway_rate_per_second: float = Field(default=100.0, gt=0)
    gateway_rate_burst: int = Field(default=200, ge=1)
    # How many gateway replicas share the rate limits: each allows a key 1/replicas of the burst.
    gateway_replicas: int = Field(default=1, ge=1)
    # Largest request body (413 past it); batch routes take the larger limit.
    gateway_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    gateway_max_batch_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # How long a write waits to read its own effect before answering 202 instead.
    gateway_read_your_write_seconds: float = Field(default=5.0, ge=0)
    # How long an accepted key is trusted without asking the store again (a revocation's delay).
    gateway_key_cache_seconds: float = Field(default=5.0, ge=0)
    # The gateway answers checks only while its lookup holds everything the lifecycle topic held
    # this long ago (else 503 / unavailable); the feed is compared with the topic's end this often.
    gateway_feed_max_lag_seconds: float = Field(default=5.0, gt=0)
    gateway_feed_poll_seconds: float = Field(default=0.5, gt=0)

    # Notification (services/notification). E-mail over SMTP: "none", "starttls" or "tls" (implicit TLS).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_sender: str = "Selfex <no-reply@selfex.invalid>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # The certificate authorities to trust for the SMTP server's certificate (a PEM file); empty: the system's.
    smtp_ca_file: str = ""
    # SMS through a JSON webhook (POST {"to", "text", "reference"} with a bearer token); empty: no SMS.
    sms_webhook_url: str = ""
    sms_webhook_token: SecretStr = SecretStr("")
    # A deployment's own templates (<folder>/<locale>/<kind>.txt, layout.html) before the shipped ones.
    notification_templates_dir: str = ""
    # A delivery that fails for a passing reason is tried at most this many times, backing off
    # exponentially with jitter from the first pause up to the longest.
    notification_attempts: int = Field(default=5, ge=1, le=20)
    notification_retry_first_seconds: float = Field(default=1.0, gt=0)
    notification_retry_longest_seconds: float = Field(default=60.0, gt=0)
    # At most this many messages an hour to one person, whatever asks for them.
    notification_per_person_per_hour: int = Field(default=6, ge=1)
    # Quiet hours per jurisdiction ("<IANA zone> HH:MM-HH:MM"): non-urgent messages wait for their end.
    notification_quiet_hours: dict[str, str] = Field(
        default_factory=lambda: {
            "SE": "Europe/Stockholm 21:00-08:00",
            "UK": "Europe/London 21:00-08:00",
            "DK": "Europe/Copenhagen 21:00-08:00",
            "DE": "Europe/Berlin 21:00-08:00",
            "NL": "Europe/Amsterdam 21:00-08:00",
            "AU": "Australia/Sydney 21:00-08:00",
        }
    )
    # Where to find help, per jurisdiction: one line each, in the start letter.
    notification_support_organisations: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "SE": ["Stödlinjen: 020-81 91 00, stodlinjen.se", "Spelberoendes förening: spelberoende.se"],
            "UK": ["National Gambling Helpline (GamCare): 0808 8020 133, gamcare.org.uk", "GambleAware: begambleaware.org"],
            "DK": ["StopSpillet: 70 22 28 25, stopspillet.dk"],
            "DE": ["BZgA Glücksspielsucht: 0800 1 37 27 00, check-dein-spiel.de"],
            "NL": ["AGOG: agog.nl", "Loket Kansspel: loketkansspel.nl"],
            "AU": ["Gambling Help Online: 1800 858 858, gamblinghelponline.org.au"],
        }
    )
    # A lifecycle letter waits this long for the person's contacts to arrive (they travel on another topic).
    notification_contacts_wait_seconds: float = Field(default=60.0, ge=0)
    # Deferred messages (quiet hours) are looked for this often; 0 leaves the ticking to the caller.
    notification_timer_seconds: float = Field(default=30.0, ge=0)

    # Audit: the chains' heads are checkpointed this often (seconds; 0 writes none), signed with
    # SELFEX_AUDIT_SIGNING_KEY (base64 of a 32-byte Ed25519 private key). The public development key
    # is refused outside a development stack; with no key set there, no checkpoints are written.
    audit_signing_key: SecretStr = SecretStr("")
    audit_signing_key_id: str = "a1"
    audit_checkpoint_seconds: float = Field(default=300.0, ge=0)
    # The audit service walks every chain this often (seconds; the first time soon after it starts) and
    # keeps the result for the console's "Audit chain" page; 0: never (`selfex audit verify` still does).
    audit_verify_seconds: float = Field(default=3600.0, ge=0)

    # This deployment's name among federated Selfex deployments: what its forwarder says an exclusion's
    # origin is (X-Selfex-Origin), and what its sync never imports back (no loops).
    deployment_name: str = Field(default="selfex", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")

    # The forwarder (services/forwarder): where this deployment's exclusions go. No register named:
    # the forwarder idles and says so. adapter: "native" (a register that is Selfex: POST /v1/exclusions
    # with an Idempotency-Key), "chipout" (POST exclude-customers with the key), "kafka" (a topic on
    # another cluster). The key (or the Kafka password) has no default: a register named without it
    # stops the start.
    forwarder_register: str = Field(default="", max_length=100, description="the register's name, e.g. spelpaus")
    forwarder_adapter: Literal["native", "chipout", "kafka"] = "native"
    forwarder_register_url: str = ""
    forwarder_register_key: SecretStr = SecretStr("")
    forwarder_kafka_bootstrap: str = ""
    forwarder_kafka_topic: str = ""
    forwarder_kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    forwarder_kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    forwarder_kafka_username: str = ""
    forwarder_kafka_password: SecretStr = SecretStr("")
    forwarder_timeout_seconds: float = Field(default=10.0, gt=0)
    # A delivery is attempted at most this many times, backing off exponentially with jitter from the
    # first pause up to the longest; then it is failed, an alert goes out, and it waits for a replay.
    forwarder_attempts: int = Field(default=10, ge=1, le=100)
    forwarder_retry_first_seconds: float = Field(default=2.0, gt=0)
    forwarder_retry_longest_seconds: float = Field(default=600.0, gt=0)
    # The circuit breaker: this many failures in a row open it; it lets one probe through after the pause.
    forwarder_breaker_failures: int = Field(default=5, ge=1)
    forwarder_breaker_pause_seconds: float = Field(default=30.0, gt=0)
    # Deliveries that are due are looked for this often (seconds), and at most this many attempted at once.
    forwarder_poll_seconds: float = Field(default=1.0, gt=0)
    forwarder_concurrency: int = Field(default=8, ge=1, le=256)
    # Inbound: the register's change feed (GET {url}/v1/register/changes?since=CURSOR, paged), read
    # every forwarder_sync_seconds (24 h down to seconds); and/or a register's Kafka topic. Empty: none.
    forwarder_sync_url: str = ""
    forwarder_sync_key: SecretStr = SecretStr("")
    forwarder_sync_seconds: float = Field(default=86_400.0, ge=0.1, le=86_400.0)
    forwarder_sync_page: int = Field(default=500, ge=1, le=1000)
    forwarder_sync_kafka_bootstrap: str = ""
    forwarder_sync_kafka_topic: str = ""
    # The forwarder's lag (pending, failed, the oldest pending's age, the last successful sync) as a
    # forwarding.status event this often (seconds), and once more when it stops; 0: never.
    forwarder_status_seconds: float = Field(default=60.0, ge=0)

    # Dead letters stay small and hold nothing personal in clear: the original's first bytes up to
    # this bound are kept sealed (the whole is digested), the reason is cut to this many characters.
    dead_letter_max_original_bytes: int = Field(default=64 * 1024, ge=0)
    dead_letter_max_error_chars: int = Field(default=2000, ge=100)
    # A consumer retries a message that failed for the infrastructure's sake (store or broker away)
    # with exponential backoff and jitter, holding its offset; after a round of retries the message
    # is fetched again (a consumer stuck longer than the poll interval would be dropped from its group).
    consumer_retry_first_seconds: float = Field(default=0.1, gt=0)
    consumer_retry_longest_seconds: float = Field(default=10.0, gt=0)
    consumer_retry_round_seconds: float = Field(default=60.0, gt=0)

    # A consumer's readiness endpoint (GET /readyz, /healthz) on a port of its own; 0 serves none.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535)

    # The audit's compliance queries (docs/adr/0007): a read-only HTTP API of its own (`selfex run
    # audit-query`) that only the gateway calls, with this deployment secret as a bearer token
    # (refused when missing, the public development value or shorter than 32 characters outside a
    # development stack). The gateway reaches it at the URL (empty: http://host:port).
    audit_query_host: str = "127.0.0.1"
    audit_query_port: int = Field(default=8010, ge=1, le=65535)
    audit_query_url: str = ""
    audit_query_token: SecretStr = SecretStr("")
    audit_query_timeout_seconds: float = Field(default=30.0, gt=0)
    # Retention of the audit log per record class, in days (0: kept for ever); records go only when
    # `selfex audit retain` is run, which audits itself and anchors each cut chain (README: Audit log).
    audit_retention_days: dict[str, int] = Field(
        default_factory=lambda: {
            "exclusions": 0,
            "decisions": 5 * 365,
            "notifications": 2 * 365,
            "requests": 365,
            "dead_letters": 365,
            "forwarding": 5 * 365,
        }
    )

    log_level: str = "INFO"
    log_format: str = "auto"  # auto | json | console

    def topic(self, name: str) -> str:
        """The full topic name for a contract's topic, e.g. ``exclusion.commands``."""
        return f"{self.topic_prefix}{name}"

    @property
    def kafka(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_kafka_port}"

    @property
    def mongo(self) -> str:
        return self.mongo_uri or f"mongodb://127.0.0.1:{self.embedded_mongo_port}"

    def database_for(self, service: str) -> str:
        """The name of the database ``service`` owns: its override, else ``<mongo_db>_<service>``."""
        return self.mongo_databases.get(service) or f"{self.mongo_db}_{service}"

    def environment(self) -> dict[str, str]:
        """The ``SELFEX_*`` variables that give a child process these same settings."""
        variables = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            variables[f"SELFEX_{name.upper()}"] = str(value)
        return variables

    @property
    def audit_query_base_url(self) -> str:
        """Where the gateway reaches the audit's query API."""
        return (self.audit_query_url or f"http://{self.audit_query_host}:{self.audit_query_port}").rstrip("/")

    def hash_chain(self) -> list[tuple[str, bytes]]:
        """The rotation keys after the first, oldest first: (key id, secret)."""
        chain = []
        for item in filter(None, (part.strip() for part in self.hash_next_secrets.get_secret_value().split(","))):
            key_id, _, secret = item.partition(":")
            chain.append((key_id.strip(), secret.encode()))
        return chain

    def insecure_secrets(self) -> list[str]:
        """What is wrong with the secrets, one line each (empty: nothing)."""
        problems = []
        secret = self.hash_secret.get_secret_value()
        if secret == DEVELOPMENT_HASH_SECRET:
            problems.append("SELFEX_HASH_SECRET is the public development default")
        elif len(secret) < MIN_HASH_SECRET_CHARS:
            problems.append(f"SELFEX_HASH_SECRET is shorter than {MIN_HASH_SECRET_CHARS} characters")
        for key_id, later in self.hash_chain():
            if later.decode() == DEVELOPMENT_HASH_SECRET or len(later) < MIN_HASH_SECRET_CHARS:
                problems.append(
                    f"SELFEX_HASH_NEXT_SECRETS: key {key_id!r} is the development default or shorter than {MIN_HASH_SECRET_CHARS} characters"
                )
        keys = self.encryption_keys.get_secret_value()
        if keys == DEVELOPMENT_ENCRYPTION_KEYS or any(item == DEVELOPMENT_ENCRYPTION_KEYS for item in keys.split(",")):
            problems.append("SELFEX_ENCRYPTION_KEYS holds the public development key")
        else:
            problems += _key_problems(keys, self.encryption_key_id)
        return problems

    def require_secrets(self, service: str) -> None:
        """Refuse to run with a missing, default or weak secret, unless this is a development stack."""
        if self.development:
            return
        if problems := self.insecure_secrets():
            raise InsecureSettingsError(
                f"{service} will not start: {'; '.join(problems)}. {MAKE_ONE} (put them in the environment or .env); "
                "a development stack on the embedded servers sets SELFEX_DEVELOPMENT=true"
            )


DEVELOPMENT_AUDIT_QUERY_TOKEN = "selfex-development-audit-query-token"
MIN_AUDIT_QUERY_TOKEN_CHARS = 32


def audit_query_token(settings: Settings, service: str) -> str:
    """The token the gateway and the audit's query API share: the development value on a development
    stack when none is set; outside one, ``InsecureSettingsError`` unless it is set and strong."""
    token = settings.audit_query_token.get_secret_value()
    if settings.development:
        return token or DEVELOPMENT_AUDIT_QUERY_TOKEN
    if not token:
        problem = "SELFEX_AUDIT_QUERY_TOKEN is not set"
    elif token == DEVELOPMENT_AUDIT_QUERY_TOKEN:
        problem = "SELFEX_AUDIT_QUERY_TOKEN is the public development value"
    elif len(token) < MIN_AUDIT_QUERY_TOKEN_CHARS:
        problem = f"SELFEX_AUDIT_QUERY_TOKEN is shorter than {MIN_AUDIT_QUERY_TOKEN_CHARS} characters"
    else:
        return token
    raise InsecureSettingsError(f"{service}: {problem}. {MAKE_ONE}")


def _key_problems(keys: str, current: str) -> list[str]:
    found: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in keys.split(","))):
        key_id, _, value = item.partition(":")
        try:
            found[key_id] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return [f"SELFEX_ENCRYPTION_KEYS: key {key_id!r} is not base64"]
    if not found:
        return ["SELFEX_ENCRYPTION_KEYS is empty"]
    if weak := sorted(key_id for key_id, key in found.items() if len(key) != 32):
        return [f"SELFEX_ENCRYPTION_KEYS: key {', '.join(weak)} is not 32 bytes (AES-256)"]
    if current not in found:
        return [f"SELFEX_ENCRYPTION_KEY_ID {current!r} names none of SELFEX_ENCRYPTION_KEYS"]
    return []
