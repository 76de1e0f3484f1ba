"""Bearer tokens (every call refused without the right one) and TLS with a self-signed certificate."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.flight as flight
import pytest
from serve_helpers import ServerProcess, assert_same_outputs, local_runtime, make_batch

import streamlstm as sl
from streamlstm.errors import ServeError, UnauthenticatedError

TOKEN = "s3cret-token_for-tests"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


def _calls(client: sl.flight.Client) -> list:
    batch = make_batch(np.array([1, 2]), np.random.default_rng(0))
    return [client.health, client.stats, client.reset, lambda: client.feed(batch), lambda: client.put([batch]),
            lambda: client.get(), lambda: list(client.exchange([batch]))]


def test_every_call_needs_the_token_and_sigint_stops_cleanly(model_file, token_file, tmp_path):
    with ServerProcess(["--model", str(model_file), "--token-file", str(token_file)], tmp_path) as server:
        server.wait_healthy(token=TOKEN)
        for token in (None, "wrong", TOKEN + "x"):
            with server.client(token=token) as client:
                for call in _calls(client):
                    with pytest.raises(UnauthenticatedError, match="refused the call"):
                        call()
        raw = flight.FlightClient(server.uri)
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(raw.list_actions())
        with server.client(token=TOKEN) as client:
            batch = make_batch(np.array([1, 2, 1]), np.random.default_rng(1))
            assert_same_outputs(client.feed(batch), local_runtime(model_file).feed(batch))
            assert client.stats()["rows"] == 3  # nothing refused was applied
        server.signal(signal.SIGINT)  # stops as cleanly as SIGTERM
        assert server.wait(30) == 0 and "stopped" in server.rest_of_output()


def test_bad_token_file_is_refused_at_start(model_file, tmp_path):
    (tmp_path / "empty").write_text("  \n")
    result = subprocess.run([sys.executable, "-m", "streamlstm", "serve", "--model", str(model_file), "--port", "0",
                             "--token-file", str(tmp_path / "empty")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "must hold one token" in result.stderr


def _self_signed(directory):
    """A certificate for 127.0.0.1/localhost and its key, made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_round_trip_with_a_self_signed_certificate(model_file, token_file, tmp_path):
    cert, key = _self_signed(tmp_path)
    args = ["--model", str(model_file), "--tls-cert", str(cert), "--tls-key", str(key), "--token-file", str(token_file)]
    with ServerProcess(args, tmp_path) as server:
        assert server.uri.startswith("grpc+tls://127.0.0.1:")
        server.wait_healthy(token=TOKEN, tls_root_certs=cert)
        batch = make_batch(np.array([5, 6, 5]), np.random.default_rng(2))
        with server.client(token=TOKEN, tls_root_certs=cert) as client:
            assert_same_outputs(client.feed(batch), local_runtime(model_file).feed(batch))
        with server.client(tls_root_certs=cert) as client, pytest.raises(UnauthenticatedError):
            client.feed(batch)
        plain = sl.flight.Client(server.uri.replace("grpc+tls://", "grpc://"), token=TOKEN, timeout=5)
        with pytest.raises(ServeError):
            plain.health()
        untrusted = sl.flight.Client(server.uri, token=TOKEN, timeout=5)  # the system roots do not know it
        with pytest.raises(ServeError):
            untrusted.health()


def test_signals_while_stopping_are_ignored_and_the_stop_ends_with_a_checkpoint(model_file, tmp_path):
    """An idle exchange stays open (the client's feed keeps it); SIGINT, then SIGINT and SIGTERM again and
    again until the process ends: it ends by itself, exit 0, within the bounded stop, checkpoint written."""
    with ServerProcess(["--model", str(model_file), "--checkpoint", str(tmp_path / "ck")], tmp_path) as server:
        server.wait_healthy()
        client = server.client()
        client.feed(make_batch(np.array([1, 2]), np.random.default_rng(3)))
        server.signal(signal.SIGINT)
        assert "stopping" in (server.next_line(30) or "")
        started, signals = time.monotonic(), 0
        while server.proc.poll() is None and time.monotonic() - started < 30:
            server.signal((signal.SIGINT, signal.SIGTERM)[signals % 2])
            signals += 1
            try:
                server.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        assert server.wait(1) == 0, server.stderr()
        assert time.monotonic() - started < 20 and signals >= 1
        assert "Traceback" not in server.stderr()
        client.close()
    assert (tmp_path / "ck" / "checkpoint.json").is_file()


def _write_pair(directory, name):
    directory.mkdir(exist_ok=True)
    return _self_signed(directory) if shutil.which("openssl") else pytest.skip("needs the openssl command")


@pytest.mark.parametrize("case, message", [
    ("garbage certificate", "--tls-cert .* is not a valid PEM certificate"),
    ("swapped", "holds a private key and --tls-key .* a certificate: swap them"),
    ("key of another certificate", "--tls-key .*key.pem is not the private key of the certificate in --tls-cert"),
    ("garbage key", "--tls-key .* is not a valid PEM private key"),
])
def test_a_wrong_tls_file_is_named_one_line_exit_2(model_file, tmp_path, capsys, case, message):
    from streamlstm.cli import main

    cert, key = _write_pair(tmp_path / "a", "a")
    if case == "garbage certificate":
        cert.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    elif case == "swapped":
        cert, key = key, cert
    elif case == "key of another certificate":
        _, key = _write_pair(tmp_path / "b", "b")
    else:
        key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    assert main(["serve", "--model", str(model_file), "--port", "0", "--tls-cert", str(cert),
                 "--tls-key", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and __import__("re").search(message, err), err
