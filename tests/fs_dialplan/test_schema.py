"""The JSON Schema (`just schema`): generated from fs_dialplan.spec, committed next to the
example config, and in agreement with the loader on the example and on broken configs."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from fs_dialplan import ConfigError, parse_config
from fs_dialplan.schema import build_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "voicefork.yaml"
COMMITTED = ROOT / "config" / "voicefork.schema.json"
VALIDATOR = jsonschema.Draft7Validator(build_schema())


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_committed_schema_is_current():
    assert COMMITTED.read_text() == schema_text(), "stale: run `just schema config/voicefork.schema.json`"


def test_example_config_points_editors_at_the_schema():
    assert EXAMPLE.read_text().splitlines()[0] == "# yaml-language-server: $schema=voicefork.schema.json"
    assert (EXAMPLE.parent / "voicefork.schema.json").exists()


def test_schema_is_valid_draft7_and_the_example_validates():
    jsonschema.Draft7Validator.check_schema(build_schema())
    assert list(VALIDATOR.iter_errors(example())) == []


def _set(path: str, value):
    def mutate(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if value is _DELETE:
            del d[int(last) if isinstance(d, list) else last]
        else:
            d[int(last) if isinstance(d, list) else last] = value
    return mutate


_DELETE = object()


def _both(data) -> tuple[bool, bool]:
    """(loader accepts, schema accepts) for the same data, the loader reading it as YAML."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    try:
        parse_config(text, "cfg.yaml")
        loader_ok = True
    except ConfigError:
        loader_ok = False
    return loader_ok, VALIDATOR.is_valid(yaml.safe_load(text))


BROKEN = {
    "unknown top key": _set("routs", []),
    "unknown nested key": _set("fork_server.listen_prot", 1),
    "missing required section": _set("playback", _DELETE),
    "missing auth": _set("fork_server.auth", _DELETE),
    "auth neither none nor a mapping": _set("fork_server.auth", "nope"),
    "ESL port out of range": _set("freeswitch.esl_port", 70000),
    "literal password instead of an env name": _set("freeswitch.esl_password_env", "ClueCon"),
    "${ in a string": _set("freeswitch.esl_host", "a${b}"),
    "control character in a string": _set("freeswitch.temp_dir", "/tmp\nx"),
    "connectors not a mapping": _set("connectors", ["support-bot"]),
    "connector without url": _set("connectors.sales-bot.url", _DELETE),
    "connector url not ws": _set("connectors.sales-bot.url", "http://x/y"),
    "bad duration": _set("fork_server.drain_timeout", "soon"),
    "routes not a list": _set("routes", {"support": {}}),
    "route number not E.164": _set("routes.0.number", "555-1234"),
    "route with number and pattern": _set("routes.0.pattern", "^1"),
    "route with neither": _set("routes.2.pattern", _DELETE),
    "route name with a space": _set("routes.0.name", "Support Line"),
    "rate 44k": _set("routes.1.rate", "44k"),
    "bad language tag": _set("routes.2.language", "english please"),
    "relative greeting": _set("routes.0.greeting", "hello.wav"),
    "recording maybe": _set("defaults.recording", "maybe"),
    "fallback action unknown": _set("routes.1.fallback.action", "retry"),
    "fallback transfer without target": _set("routes.1.fallback.target", _DELETE),
    "fallback play without file": _set("routes.2.fallback.file", _DELETE),
    "metadata not a mapping": _set("routes.0.metadata", ["tier1"]),
    "playback command unknown": _set("playback.command", "play"),
    "segment not a multiple of the ptime": _set("playback.first_segment_ms", 50),
    "trunks not a list": _set("trunks", {"twilio": {}}),
    "trunk without acl_cidrs": _set("trunks.0.acl_cidrs", _DELETE),
    "trunk with no CIDR": _set("trunks.0.acl_cidrs", []),
    "trunk CIDR garbage": _set("trunks.0.acl_cidrs.0", "twilio"),
    "trunk transport sctp": _set("trunks.0.transport", "sctp"),
    "trunk proxy with sip:": _set("trunks.0.proxy", "sip:example.pstn.twilio.com"),
    "trunk user without password": _set("trunks.0.password_env", _DELETE),
    "trunk password without user": _set("trunks.0.username", _DELETE),
    "unknown trunk key": _set("trunks.0.pasword", "x"),
    "trunk caller id not E.164": _set("trunks.0.caller_id_number", "555"),
    "outbound without token_env": _set("outbound.token_env", _DELETE),
    "outbound token_env a literal": _set("outbound.token_env", "s3cret-token"),
    "outbound token_env empty": _set("outbound.token_env", None),  # only `none` turns auth off
    "outbound rate zero": _set("outbound.calls_per_second", 0),
    "outbound timeout over 120 s": _set("outbound.default_timeout", 600),
    "outbound webhook not http": _set("outbound.status_webhook", "ftp://example.com/x"),
    "unknown outbound key": _set("outbound.trunk", "twilio"),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_shape_errors_are_rejected_by_both_loader_and_schema(mutate):
    data = example()
    mutate(data)
    assert _both(data) == (False, False)


def test_registering_trunk_without_credentials_is_rejected_by_both():
    data = example()
    data["trunks"][0]["register"] = True
    del data["trunks"][0]["username"], data["trunks"][0]["password_env"]
    assert _both(data) == (False, False)


VALID = {
    "auth: none": _set("fork_server.auth", "none"),
    "greeting none": _set("routes.0.greeting", "none"),
    "greeting null": _set("routes.0.greeting", None),
    "rate as a number": _set("routes.1.rate", 8000),
    "yes for true": _set("defaults.recording", "yes"),
    "duration as a number": _set("routes.0.max_duration", 90),
    "extension as a number": _set("routes.1.fallback.target", 1000),
    "bare IP in an ACL": _set("trunks.0.acl_cidrs.0", "192.0.2.1"),
    "no trunks (and no outbound)": lambda d: (d.pop("trunks"), d.pop("outbound")),
    "outbound without auth": _set("outbound.token_env", "none"),
    "outbound with a webhook": _set("outbound.status_webhook", "https://hooks.example.com/vf?x=1"),
    "outbound without default_trunk (one trunk)": _set("outbound.default_trunk", _DELETE),
    "registering trunk": _set("trunks.0.register", True),
    "tls trunk with a port": _set("trunks.0.proxy", "example.pstn.twilio.com:5061"),
}


@pytest.mark.parametrize("mutate", VALID.values(), ids=VALID.keys())
def test_valid_variants_are_accepted_by_both(mutate):
    data = copy.deepcopy(example())
    mutate(data)
    assert _both(data) == (True, True)
