"""Settings: precedence (file < env < CLI flag), nested env names, masked secrets, the hosts
clients connect to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pinpipe.cli import app
from pinpipe.config import ConfigFileError, client_host, flag_overrides, load_settings, masked_dump


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pinpipe.toml"
    path.write_text(
        '[broker]\ntopic_prefix = "from-file"\npartitions = 6\nsasl_password = "file-secret"\n'
        '[emulator]\nrate = 11.0\nconcurrency = 3\n'
    )
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PINPIPE_"):
            monkeypatch.delenv(name)


def test_defaults_bind_loopback_and_use_embedded_services(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.broker.bootstrap_servers is None
    assert settings.postgres.dsn is None
    assert settings.emulator.base_url.startswith("http://127.0.0.1:")
    assert settings.data_dir == (tmp_path / "data")


def test_file_then_env_then_override(config_file, monkeypatch):
    settings = load_settings(config_file)
    assert (settings.broker.topic_prefix, settings.broker.partitions, settings.emulator.rate) == ("from-file", 6, 11.0)

    monkeypatch.setenv("PINPIPE_BROKER__TOPIC_PREFIX", "from-env")
    monkeypatch.setenv("PINPIPE_EMULATOR__RATE", "22")
    settings = load_settings(config_file)
    assert (settings.broker.topic_prefix, settings.broker.partitions, settings.emulator.rate) == ("from-env", 6, 22.0)
    assert settings.emulator.concurrency == 3  # untouched keys of the file section survive

    settings = load_settings(config_file, emulator={"rate": 33.0})
    assert settings.emulator.rate == 33.0 and settings.broker.topic_prefix == "from-env"


def test_config_file_from_env_variable(config_file, monkeypatch):
    monkeypatch.setenv("PINPIPE_CONFIG", str(config_file))
    assert load_settings().broker.partitions == 6


def test_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigFileError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_masked(config_file, monkeypatch):
    monkeypatch.setenv("PINPIPE_POSTGRES__DSN", "postgresql://u:hunter2@db.example:5432/x")
    settings = load_settings(config_file)
    assert settings.broker.sasl_password.get_secret_value() == "file-secret"
    text = json.dumps(masked_dump(settings))
    assert "hunter2" not in text and "file-secret" not in text and "**********" in text
    assert "hunter2" not in repr(settings)


def test_librdkafka_config_passes_security_through(monkeypatch):
    monkeypatch.setenv("PINPIPE_BROKER__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_USERNAME", "svc")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_PASSWORD", "pw")
    monkeypatch.setenv("PINPIPE_BROKER__CLIENT_OPTIONS", '{"socket.keepalive.enable": "true"}')
    config = load_settings().broker.client_config("b1:9092,b2:9092")
    assert config == {
        "bootstrap.servers": "b1:9092,b2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "socket.keepalive.enable": "true",
    }


def test_java_client_config_for_sparks_kafka_connector(monkeypatch):
    monkeypatch.setenv("PINPIPE_BROKER__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_USERNAME", "svc")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_PASSWORD", 'a"b\\c')
    monkeypatch.setenv("PINPIPE_BROKER__SSL_CA_LOCATION", "/ca.pem")
    monkeypatch.setenv("PINPIPE_BROKER__CLIENT_OPTIONS", '{"socket.keepalive.enable": "true"}')
    monkeypatch.setenv("PINPIPE_BROKER__JAVA_CLIENT_OPTIONS", '{"client.dns.lookup": "use_all_dns_ips"}')
    config = load_settings().broker.java_client_config("b1:9092")
    assert config == {
        "bootstrap.servers": "b1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        # JAAS quoting: a backslash before each quote and backslash of the password
        "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required '
        'username="svc" password="a\\"b\\\\c";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/ca.pem",
        "client.dns.lookup": "use_all_dns_ips",
    }


def test_java_client_config_needs_jaas_for_other_mechanisms(monkeypatch):
    monkeypatch.setenv("PINPIPE_BROKER__SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("PINPIPE_BROKER__SASL_USERNAME", "svc")
    with pytest.raises(ValueError, match="java_client_options"):
        load_settings().broker.java_client_config("b1:9092")
    monkeypatch.setenv("PINPIPE_BROKER__JAVA_CLIENT_OPTIONS", '{"sasl.jaas.config": "custom;"}')
    assert load_settings().broker.java_client_config("b1:9092")["sasl.jaas.config"] == "custom;"


def test_credentials_in_client_option_maps_are_masked(monkeypatch):
    monkeypatch.setenv("PINPIPE_BROKER__CLIENT_OPTIONS", '{"sasl.password": "hunter2", "linger.ms": "5"}')
    monkeypatch.setenv("PINPIPE_BROKER__JAVA_CLIENT_OPTIONS", '{"sasl.jaas.config": "x password=hunter3;"}')
    monkeypatch.setenv("PINPIPE_BATCH__SPARK_CONF", '{"spark.hadoop.fs.s3a.secret.key": "hunter4"}')
    shown = masked_dump(load_settings())
    assert shown["broker"]["client_options"] == {"sasl.password": "**********", "linger.ms": "5"}
    assert shown["broker"]["java_client_options"] == {"sasl.jaas.config": "**********"}
    assert shown["batch"]["spark_conf"] == {"spark.hadoop.fs.s3a.secret.key": "**********"}


def test_cli_config_precedence_and_masking(config_file, monkeypatch):
    monkeypatch.setenv("PINPIPE_BROKER__PARTITIONS", "9")
    result = CliRunner().invoke(app, ["--config", str(config_file), "config"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["broker"]["topic_prefix"] == "from-file"
    assert shown["broker"]["partitions"] == 9
    assert shown["broker"]["sasl_password"] == "**********"
    assert "file-secret" not in result.output


def test_cli_flag_beats_env_and_file(config_file, monkeypatch, tmp_path):
    """`pinpipe source export --seed` (a flag) wins over PINPIPE_SOURCE__SEED and the file."""
    config_file.write_text(config_file.read_text() + "[source]\nseed = 1\nrows = 5\n")
    monkeypatch.setenv("PINPIPE_SOURCE__SEED", "2")
    runner = CliRunner()
    outputs = {}
    for label, extra in (("env", []), ("flag", ["--seed", "3"])):
        out = tmp_path / label
        result = runner.invoke(app, ["--config", str(config_file), "source", "export", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        outputs[label] = (out / "pin.jsonl").read_text()
    from pinpipe.source.export import export_tables
    from pinpipe.source.generator import generate_tables

    for label, seed in (("env", 2), ("flag", 3)):
        export_tables(generate_tables(seed, 5), tmp_path / f"expected-{label}", "jsonl")
        assert outputs[label] == (tmp_path / f"expected-{label}" / "pin.jsonl").read_text()


def test_the_renamed_read_tasks_setting_is_an_error_not_ignored(tmp_path):
    path = tmp_path / "pinpipe.toml"
    path.write_text("[speed]\nread_tasks_per_topic = 0\n")
    with pytest.raises(ValueError, match="now speed.read_tasks"):
        load_settings(config_file=path)


def test_flag_overrides_are_named_like_the_environment_and_unset_ones_override_nothing():
    assert flag_overrides(speed__trigger_s=0.5, up__dashboard__port=0, up__lake_metrics_port=None,
                          data_dir="d", lake__root=None) == {
        "speed": {"trigger_s": 0.5}, "up": {"dashboard": {"port": 0}}, "data_dir": "d"}


def test_flags_beat_the_environment_through_load_settings(monkeypatch):
    monkeypatch.setenv("PINPIPE_UP__DASHBOARD__PORT", "8181")
    monkeypatch.setenv("PINPIPE_UP__DASHBOARD__HOST", "0.0.0.0")
    settings = load_settings(**flag_overrides(up__dashboard__port=9191, up__dashboard__host=None))
    assert (settings.up.dashboard.host, settings.up.dashboard.port) == ("0.0.0.0", 9191)


def test_clients_reach_a_wildcard_bind_address_on_loopback():
    assert client_host("0.0.0.0") == "127.0.0.1"
    assert client_host("::") == "127.0.0.1"
    assert client_host("127.0.0.1") == "127.0.0.1"
    assert client_host("10.1.2.3") == "10.1.2.3"
    assert client_host("pinpipe.internal") == "pinpipe.internal"
