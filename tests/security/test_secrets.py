"""No secret has a usable default outside development: every service refuses the committed values (or a
missing or weak one) when it is pointed at named servers, and says how to make real ones."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfex.stack import SERVICES
from services.registration.app import create_app as create_registration
from shared.identity import Hasher
from shared.settings import DEVELOPMENT_ENCRYPTION_KEYS, DEVELOPMENT_HASH_SECRET, InsecureSettingsError, Settings, audit_query_token

SELFEX = str(Path(sys.executable).parent / "selfex")
KEY = base64.b64encode(b"k" * 32).decode()


def named_servers(settings: Settings, **secrets: str) -> dict[str, str]:
    """An environment naming the session's servers, with only the secrets given (none: the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFEX_")}
    env |= {
        "SELFEX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SELFEX_MONGO_URI": settings.mongo_uri,
        "SELFEX_MONGO_DB": settings.mongo_db,
    }
    env |= {"SELFEX_TOPIC_PREFIX": settings.topic_prefix, "SELFEX_DATA_DIR": "/nonexistent"} | secrets
    return env


@pytest.mark.integration
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_pointed_at_named_servers_refuses_the_default_secrets_and_says_how_to_make_some(settings, service, tmp_path):
    done = subprocess.run([SELFEX, "run", service], env=named_servers(settings), cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "SELFEX_HASH_SECRET is the public development default" in done.stderr
    assert "SELFEX_ENCRYPTION_KEYS holds the public development key" in done.stderr
    assert "selfex secrets generate" in done.stderr


@pytest.mark.integration
def test_selfex_up_with_named_servers_refuses_a_default_key_even_beside_a_real_hash_secret(settings, tmp_path):
    env = named_servers(settings, SELFEX_HASH_SECRET="a-real-secret-of-enough-length")
    done = subprocess.run([SELFEX, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "SELFEX_ENCRYPTION_KEYS holds the public development key" in done.stderr
    assert "HASH_SECRET" not in done.stderr


@pytest.mark.integration
async def test_a_service_started_in_process_with_the_default_secret_does_not_start(settings):
    app = create_registration(settings.model_copy(update={"hash_secret": Settings().hash_secret}))

    with pytest.raises(InsecureSettingsError, match="registration will not start: SELFEX_HASH_SECRET is the public development default"):
        async with app:
            pass


def test_generated_secrets_are_accepted_and_differ_each_time(tmp_path):
    runs = [subprocess.run([SELFEX, "secrets", "generate"], capture_output=True, text=True, timeout=30, check=True) for _ in range(2)]
    values = [dict(line.split("=", 1) for line in run.stdout.splitlines()) for run in runs]

    assert set(values[0]) == {
        "SELFEX_HASH_SECRET",
        "SELFEX_HASH_KEY_ID",
        "SELFEX_ENCRYPTION_KEYS",
        "SELFEX_ENCRYPTION_KEY_ID",
        "SELFEX_AUDIT_QUERY_TOKEN",
    }
    assert values[0]["SELFEX_HASH_SECRET"] != values[1]["SELFEX_HASH_SECRET"]
    assert values[0]["SELFEX_ENCRYPTION_KEYS"] != values[1]["SELFEX_ENCRYPTION_KEYS"]
    assert values[0]["SELFEX_AUDIT_QUERY_TOKEN"] != values[1]["SELFEX_AUDIT_QUERY_TOKEN"]
    settings = Settings(**{name.removeprefix("SELFEX_").lower(): value for name, value in values[0].items()})
    assert settings.insecure_secrets() == []
    assert audit_query_token(settings, "test") == values[0]["SELFEX_AUDIT_QUERY_TOKEN"], "the compliance queries accept it"


def test_a_generated_hash_key_is_a_link_the_chain_accepts():
    link = subprocess.run([SELFEX, "secrets", "hash-key"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    settings = Settings(
        hash_secret="a-real-secret-of-enough-length", encryption_keys=f"e9:{KEY}", encryption_key_id="e9", hash_next_secrets=link
    )

    assert settings.insecure_secrets() == []
    assert Hasher.from_settings(settings).key_id == link.split(":", 1)[0]


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        ({"hash_secret": "short"}, "SELFEX_HASH_SECRET is shorter than 16 characters"),
        ({"hash_next_secrets": "k2:short"}, "SELFEX_HASH_NEXT_SECRETS: key 'k2' is the development default or shorter"),
        ({"encryption_keys": "e9:not base64!"}, "key 'e9' is not base64"),
        ({"encryption_keys": f"e9:{base64.b64encode(b'16-byte-key-----').decode()}", "encryption_key_id": "e9"}, "key e9 is not 32 bytes"),
        ({"encryption_keys": f"e9:{KEY}", "encryption_key_id": "e1"}, "SELFEX_ENCRYPTION_KEY_ID 'e1' names none"),
        ({"encryption_keys": f"e9:{KEY},{DEVELOPMENT_ENCRYPTION_KEYS}", "encryption_key_id": "e9"}, "holds the public development key"),
    ],
)
def test_weak_or_inconsistent_secrets_are_named(secrets, problem):
    settings = Settings(
        **({"hash_secret": "a-real-secret-of-enough-length", "encryption_keys": f"e9:{KEY}", "encryption_key_id": "e9"} | secrets)
    )

    assert any(problem in line for line in settings.insecure_secrets()), settings.insecure_secrets()
    with pytest.raises(InsecureSettingsError):
        settings.require_secrets("test")


def test_a_development_stack_runs_with_the_committed_secrets():
    development = Settings(development=True)

    assert development.hash_secret.get_secret_value() == DEVELOPMENT_HASH_SECRET
    development.require_secrets("test")  # no error
    with pytest.raises(InsecureSettingsError):
        Settings().require_secrets("test")


SECRETS = ("SELFEX_HASH_SECRET", "SELFEX_HASH_KEY_ID", "SELFEX_ENCRYPTION_KEYS", "SELFEX_ENCRYPTION_KEY_ID")


def test_compose_requires_every_secret_from_env_and_the_kubernetes_template_names_each(repo_root):
    import yaml

    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    environment = compose["x-selfex-env"]
    for name in SECRETS:
        assert str(environment[name]).startswith(f"${{{name}:?"), f"compose must stop when {name} is not set"
    template = yaml.safe_load((repo_root / "deploy" / "secret.example.yaml").read_text())
    assert set(SECRETS) <= set(template["stringData"])
    example = (repo_root / ".env.example").read_text()
    assert not any(line.startswith(SECRETS) for line in example.splitlines()), ".env.example holds no secret"
    assert ".env" in (repo_root / ".gitignore").read_text().split()
