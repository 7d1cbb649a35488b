"""Real services for the line's tests: a Mosquitto broker on a free loopback port and an MQTT subscriber; and
``read_journal``, the tests' oracle of what the line journaled.

Nothing here is a mock: the broker is Debian's `mosquitto` started from a config file, the subscriber a paho
client. Waits are bounded waits on real conditions (a port accepting connections, a message arriving).
Import the fixtures into a test module with ``from tests.line_fixtures import broker, subscriber_factory``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from utils.journal import parse_record

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30.0  # upper bound for any single wait; real waits end as soon as their condition holds


def find_mosquitto() -> str | None:
    """Debian installs the broker in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> object:
    """Poll `condition` until it returns something truthy (returned) or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)  # polling interval of a condition, not a guess at how long something takes


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a journal file, in order (torn and foreign lines skipped, as the publisher skips them)."""
    with open(path, "rb") as reader:
        return [record for record in map(parse_record, reader) if record is not None]


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Broker:
    """A Mosquitto process on 127.0.0.1:`port` with persistence in `folder`; can be killed and restarted."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        # user: when started as root, mosquitto would otherwise switch to a user that cannot write `folder`.
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                               f"persistence_location {folder}/\nautosave_interval 3600\nlog_dest stderr\n"
                               "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                               "log_type subscribe\n"
                               f"user {_user_name()}\n")
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.folder / f"mosquitto-{self.starts}.log", "wb")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stderr=log, stdout=log)
        wait_until(lambda: port_accepts(self.port) or self.process.poll() is not None, "mosquitto to listen")
        assert self.process.poll() is None, f"mosquitto exited: {(self.folder / f'mosquitto-{self.starts}.log').read_text()}"

    def log_text(self) -> str:
        """What the running broker logged so far (connections, subscriptions)."""
        return (self.folder / f"mosquitto-{self.starts}.log").read_text(errors="replace")

    def save(self) -> None:
        """Write the broker's persistence file now (SIGUSR1), so that sessions survive a kill -9."""
        database = self.folder / "mosquitto.db"
        database.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        wait_until(database.exists, "mosquitto to write its database")  # written aside, then renamed

    def kill(self) -> None:
        """kill -9: no goodbye to clients, no last save."""
        self.process.kill()
        self.process.wait(timeout=WAIT_S)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records every message under `topic_filter`; wait_for() waits for a condition on them.

    `persistent=True` uses a fixed client id and a non-clean session, so the broker keeps QoS 1 messages for it
    while it is disconnected (and, after Broker.save(), across a broker restart).
    """

    def __init__(self, port: int, topic_filter: str, *, persistent: bool = False) -> None:
        client_id = f"test-subscriber-{port}-{id(self)}" if persistent else ""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.messages: list[Received] = []
        self.subscribed = threading.Event()
        self._changed = threading.Condition()
        self.client.on_connect = lambda client, *rest: client.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *rest: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "subscriber did not get its subscription acknowledged"

    def _on_message(self, client, userdata, message) -> None:
        with self._changed:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain)))
            self._changed.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._changed:
            return [message for message in self.messages if message.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> object:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                value = condition()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = sorted({message.topic for message in self.messages})
                    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; topics seen: {topics}")
                self._changed.wait(min(remaining, 0.5))  # woken by each message; 0.5 s bounds a missed wake-up

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("the mosquitto broker is not installed (Debian: apt-get install mosquitto)")
    folder = tmp_path / "broker"
    folder.mkdir()
    running = Broker(binary, folder)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, topic_filter: str, **options) -> Subscriber:
        made.append(Subscriber(port, topic_filter, **options))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


def main_py_command(*arguments: str) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "main.py"), *arguments]


def start_main_py(*arguments: str, log_path: Path) -> subprocess.Popen:
    """main.py as a real process (own stdout/stderr file), from the project root."""
    log = open(log_path, "wb")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(main_py_command(*arguments), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=environment)


# ---------------------------------------------------------------- brokers that say no: passwords and TLS


def write_password_file(path: Path, user: str, password: str) -> Path:
    """A Mosquitto password file made by Debian's own mosquitto_passwd (skips the test without it)."""
    binary = shutil.which("mosquitto_passwd") or next(
        (candidate for candidate in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd")
         if os.access(candidate, os.X_OK)), None)
    if binary is None:
        pytest.skip("mosquitto_passwd is not installed (Debian: apt-get install mosquitto)")
    path.write_text("")
    subprocess.run([binary, "-b", str(path), user, password], check=True, capture_output=True, timeout=WAIT_S)
    return path


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a broker certificate it signed for 127.0.0.1, and an unrelated CA, made with `openssl`;
    also client certificates for a line: one the CA signed, one the other CA signed.

    Keys: ca, server_cert, server_key, other_ca, client_cert, client_key, stranger_cert, stranger_key. Skips the
    test where the openssl command is missing.
    """
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command line tool is not installed: cannot make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "server_cert", "server_key",
                                                        "server_request", "other_ca", "other_ca_key",
                                                        "client_cert", "client_key", "stranger_cert",
                                                        "stranger_key")}
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*arguments: str) -> None:
        subprocess.run([binary, *arguments], check=True, capture_output=True, timeout=WAIT_S)

    for ca, key, name in (("ca", "ca_key", "aivision test CA"), ("other_ca", "other_ca_key", "some other CA")):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                "-keyout", str(files[key]), "-out", str(files[ca]))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(files["server_key"]),
            "-out", str(files["server_request"]))
    openssl("x509", "-req", "-days", "2", "-in", str(files["server_request"]), "-CA", str(files["ca"]),
            "-CAkey", str(files["ca_key"]), "-CAcreateserial", "-extfile", str(folder / "server.ext"),
            "-out", str(files["server_cert"]))
    for cert, key, ca in (("client_cert", "client_key", "ca"), ("stranger_cert", "stranger_key", "other_ca")):
        request = folder / f"{cert}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=line1", "-keyout", str(files[key]),
                "-out", str(request))
        openssl("x509", "-req", "-days", "2", "-in", str(request), "-CA", str(files[ca]), "-CAkey",
                str(files[f"{ca}_key"]), "-CAcreateserial", "-out", str(files[cert]))
    return {name: files[name] for name in ("ca", "server_cert", "server_key", "other_ca", "client_cert",
                                           "client_key", "stranger_cert", "stranger_key")}


def configure_broker(broker: Broker, *, password_file: Path | None = None, tls: dict[str, Path] | None = None,
                     anonymous_port: int | None = None, require_certificate: bool = False) -> None:
    """Rewrite a (stopped) Broker's config: its port asks for a password (`password_file`) and/or speaks TLS
    (`tls` from make_tls_files), with `require_certificate` only to clients with a certificate its CA signed;
    `anonymous_port` adds a plain listener without a password, e.g. for a Subscriber.
    Takes effect at the next broker.start()."""
    main_listener = [f"listener {broker.port} 127.0.0.1",
                     "allow_anonymous false" if password_file else "allow_anonymous true"]
    if password_file:
        main_listener.append(f"password_file {password_file}")
    if tls:
        main_listener += [f"cafile {tls['ca']}", f"certfile {tls['server_cert']}", f"keyfile {tls['server_key']}"]
        if require_certificate:
            main_listener.append("require_certificate true")
    lines = ["per_listener_settings true", *main_listener]
    if anonymous_port is not None:
        lines += [f"listener {anonymous_port} 127.0.0.1", "allow_anonymous true"]
    lines += ["persistence true", f"persistence_location {broker.folder}/", "autosave_interval 3600",
              "log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information",
              f"user {_user_name()}"]
    broker.config.write_text("\n".join(lines) + "\n")


def start_secured_broker(folder: Path, **options) -> Broker:
    """A broker in `folder` configured by configure_broker(**options), started; skips without mosquitto."""
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("the mosquitto broker is not installed (Debian: apt-get install mosquitto)")
    folder.mkdir()
    secured = Broker(binary, folder)
    configure_broker(secured, **options)
    secured.start()
    return secured
