"""Bearer API keys: sha256, environment and plaintext entries; constant-time check."""

from __future__ import annotations

import hashlib

import pytest

from appliance.errors import AuthenticationError, ConfigError
from appliance.gateway.auth import KeyRing
from appliance.spec.schema import ApiKeySpec

HASHED_SECRET = "hashed-secret-1"
ENV_SECRET = "env-secret-2"
PLAIN_SECRET = "plain-secret-3"


@pytest.fixture()
def ring() -> KeyRing:
    keys = [
        ApiKeySpec(name="hashed", sha256=hashlib.sha256(HASHED_SECRET.encode()).hexdigest()),
        ApiKeySpec(name="from-env", env="EMBED_TEST_KEY"),
        ApiKeySpec(name="plain", key=PLAIN_SECRET),
    ]
    return KeyRing.from_specs(keys, environ={"EMBED_TEST_KEY": ENV_SECRET})


def test_a_key_given_as_sha256_is_accepted_and_named(ring: KeyRing) -> None:
    assert ring.check(f"Bearer {HASHED_SECRET}") == "hashed"


def test_a_key_given_by_environment_variable_is_accepted_and_named(ring: KeyRing) -> None:
    assert ring.check(f"Bearer {ENV_SECRET}") == "from-env"


def test_a_plaintext_key_is_accepted_and_named(ring: KeyRing) -> None:
    assert ring.check(f"Bearer {PLAIN_SECRET}") == "plain"


def test_an_uppercase_sha256_digest_is_accepted() -> None:
    ring = KeyRing.from_specs(
        [ApiKeySpec(name="up", sha256=hashlib.sha256(b"k").hexdigest().upper())], environ={}
    )
    assert ring.check("Bearer k") == "up"


def test_the_bearer_scheme_is_case_insensitive(ring: KeyRing) -> None:
    assert ring.check(f"bearer {PLAIN_SECRET}") == "plain"


def test_the_keyring_holds_digests_not_plaintext(ring: KeyRing) -> None:
    stored = b"".join(digest for _, digest in ring.digests)
    for secret in (HASHED_SECRET, ENV_SECRET, PLAIN_SECRET):
        assert secret.encode() not in stored


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {PLAIN_SECRET}x",
        f"Bearer {PLAIN_SECRET[:-1]}",
        "Bearer wrong",
        f"Bearer {hashlib.sha256(HASHED_SECRET.encode()).hexdigest()}",
    ],
    ids=["suffix", "prefix", "other", "the-digest-itself"],
)
def test_a_wrong_key_is_rejected(ring: KeyRing, header: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        ring.check(header)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer    "])
def test_a_missing_header_or_empty_token_is_rejected(ring: KeyRing, header: str | None) -> None:
    with pytest.raises(AuthenticationError) as info:
        ring.check(header)
    assert "Authorization: Bearer" in info.value.message


@pytest.mark.parametrize("header", [f"Basic {PLAIN_SECRET}", f"Token {PLAIN_SECRET}", PLAIN_SECRET])
def test_a_valid_key_under_the_wrong_scheme_is_rejected(ring: KeyRing, header: str) -> None:
    with pytest.raises(AuthenticationError):
        ring.check(header)


def test_a_missing_environment_variable_is_a_config_error_naming_its_entry() -> None:
    keys = [ApiKeySpec(name="ok", key="k"), ApiKeySpec(name="ci", env="EMBED_MISSING_KEY")]
    with pytest.raises(ConfigError) as info:
        KeyRing.from_specs(keys, environ={})
    assert info.value.key == "auth.keys[1].env"
    assert "EMBED_MISSING_KEY" in info.value.problem
    assert "EMBED_MISSING_KEY" in info.value.fix


def test_an_empty_environment_variable_counts_as_missing() -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.from_specs(
            [ApiKeySpec(name="ci", env="EMBED_EMPTY_KEY")], environ={"EMBED_EMPTY_KEY": ""}
        )
    assert info.value.key == "auth.keys[0].env"


def test_the_process_environment_is_read_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBED_PROCESS_KEY", "from-process")
    ring = KeyRing.from_specs([ApiKeySpec(name="proc", env="EMBED_PROCESS_KEY")])
    assert ring.check("Bearer from-process") == "proc"


@pytest.mark.parametrize("header", [None, "", "Bearer anything", "Basic zzz"])
def test_an_open_keyring_accepts_anything(header: str | None) -> None:
    ring = KeyRing.from_specs([], environ={})
    assert ring.open
    assert ring.check(header) is None


def test_a_keyring_with_keys_is_not_open(ring: KeyRing) -> None:
    assert not ring.open
