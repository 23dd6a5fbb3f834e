"""The local federation's channel and membership: TLS by default, only enrolled SuperNodes join."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from pathlib import Path

import pytest

from privfed.config import PrivFedConfig, config_from_dict
from privfed.federated.flower_control import register_supernode
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.federated.security import write_node_key
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def _peer_certificate(port: int, ca: Path) -> dict:
    """The SuperLink's certificate as a TLS client verifying against the run's CA sees it."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.getpeercert()


def _pem_public(openssh_public: Path) -> str:
    """An OpenSSH public key as the PEM the SuperLink logs."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_public_key(openssh_public.read_bytes())
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _wait_exit(proc, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    return proc.poll()


def _default_channel_without_dp() -> PrivFedConfig:
    """The default channel (TLS, SuperNode authentication) for short runs without DP."""
    return config_from_dict(
        raw_params(
            train_federated={"rounds": 1, "startup_timeout_s": 60},
            privacy={"enabled": False},
            register_model={"candidate": "federated"},
        )
    )


def test_tls_by_default_and_an_unknown_supernode_is_refused(partitions: Path, tmp_path: Path):
    # Prepare: the default config (TLS, SuperNode authentication), without DP
    cfg = _default_channel_without_dp()
    hospitals = sorted(p for p in partitions.iterdir() if p.is_dir())
    enrolled, intruder_data = hospitals[:2], hospitals[2]
    with LocalFederation(cfg, enrolled, tmp_path / "fed") as federation:
        # Execute: a SuperNode with a key nobody enrolled tries to join with a third hospital
        stranger = write_node_key(tmp_path / "stranger", "stranger")
        intruder = federation.start_supernode(
            intruder_data, warm=True, auth_key=stranger.private, name="intruder", expendable=True
        )
        result = federation.run(RunSpec(name="secure", out_dir=tmp_path / "out", dp=False))
        cert = _peer_certificate(federation.port, federation.tls.ca_cert)
        intruder_code = _wait_exit(intruder, 30)
        intruder_log = (federation.log_dir / "supernode-intruder.log").read_text()
        superlink_log = (federation.log_dir / "superlink.log").read_text()
    # Assert: the run went on with the enrolled hospitals only
    assert result["rounds_completed"] == cfg.train_federated.rounds
    trained = set(result["rounds"][1]["train"])
    assert trained == {h.name for h in enrolled}
    assert intruder_data.name not in trained
    # the SuperLink refused the stranger's key, and Flower stopped that SuperNode
    assert intruder_code not in (None, 0), intruder_log[-2000:]
    assert "Failed to activate SuperNode" in intruder_log
    body = "".join(_pem_public(stranger.public).splitlines()[1:-1])
    refusal = next(
        line for line in superlink_log.splitlines() if "No SuperNode found with the given" in line
    )
    assert body[:40] in refusal.replace("\\n", "")
    # the SuperLink serves TLS with a certificate signed by this run's CA
    subject = dict(x[0] for x in cert["subject"])
    assert subject["commonName"] == "privfed-superlink"


def test_insecure_mode_is_explicit_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config_from_dict(raw_params(train_federated={"insecure": True, "startup_timeout_s": 60}))
    with (
        caplog.at_level(logging.WARNING, logger="privfed.federated.launcher"),
        LocalFederation(cfg, [], tmp_path / "fed") as federation,
    ):
        assert federation.tls is None and federation.enrolled == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train_federated.insecure=true" in w and "plaintext" in w for w in warnings)


def test_a_node_that_registers_its_own_key_never_trains(partitions: Path, tmp_path: Path):
    """The attack: with only the run's CA certificate (every hospital has it), register a key
    of one's own through the SuperLink's address and join with it. Flower 1.41 serves node
    registration on the same port as the Fleet API, so the SuperLink accepts the key; the
    ServerApp must still refuse the node, because no enrolled key belongs to it."""
    # Prepare: two enrolled hospitals; the attacker holds the third partition
    cfg = _default_channel_without_dp()
    hospitals = sorted(p for p in partitions.iterdir() if p.is_dir())
    enrolled, stolen = hospitals[:2], hospitals[2]
    with LocalFederation(cfg, enrolled, tmp_path / "fed") as federation:
        # Execute: the attacker registers its own key (the SuperLink says yes) and joins
        evil = write_node_key(tmp_path / "evil", "evil")
        evil_node = register_supernode(evil.public, "local", federation._env)
        intruder = federation.start_supernode(
            stolen, warm=True, auth_key=evil.private, name="evil", expendable=True
        )
        result = federation.run(RunSpec(name="attacked", out_dir=tmp_path / "out", dp=False))
        intruder_alive = intruder.poll() is None
    # Assert: the key was accepted and its SuperNode connected ...
    assert evil_node.isdigit() and intruder_alive
    assert int(evil_node) not in federation.node_ids.values()
    # ... yet only the enrolled hospitals trained, in every round, and the final evaluation
    assert result["rounds_completed"] == cfg.train_federated.rounds
    for row in result["rounds"][1:]:
        assert set(row["train"]) == {h.name for h in enrolled}, row["train"]
    assert stolen.name not in result["rounds"][0]["val_per_hospital"]
    assert set(result["dp_history"]) <= {h.name for h in enrolled}
