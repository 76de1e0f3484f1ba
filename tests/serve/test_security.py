"""Bearer tokens (every call refused without the right one) and TLS with a self-signed certificate."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

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
