"""Run the inspection line: inspect every part a source delivers and publish the results over MQTT.

    python main.py --source data/demo/test --mqtt-host 127.0.0.1
    python main.py --source watch:/srv/line1/incoming --mqtt-host broker.plant --tls --ca ca.pem \\
                   --username line1 --password-file line1.secret --images nok

Without --mqtt-host the line inspects, journals and prints one line per part. Ctrl-C or SIGTERM stops it
cleanly (final stats, status "offline", journal flushed, exit status 0). Topics: see utils/mqtt.py or the README.

The first line printed names the run folder, its model, the journal and the broker ("no MQTT" without one).
A broker that cannot be reached is logged and retried; the line goes on journaling. Exit status 2: a wrong
option (printed with the usage), or a problem to fix printed as one line "error: ...": a run folder that is
missing or damaged, a journal that cannot be written, a broker that rejects the credentials or its TLS
certificate. Nothing journaled is lost: the next run with the same journal delivers it first.
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
import zlib
from pathlib import Path

from utils.journal import Journal
from utils.line import (DEFAULT_MAX_BATCH_DELAY_S, DEFAULT_SHIFTS, IMAGE_CHOICES, ShiftSchedule,
                        default_journal_path, run_line)
from utils.mqtt import DEFAULT_TOPIC_PREFIX, BrokerRejectedError, MqttSettings, check_broker
from utils.run import CONFIG_FILE, DEFAULT_RUNS_DIR, ENCODER_FILE, MODEL_FILE, read_json, resolve_run

log = logging.getLogger("main")
USER_ERROR_STATUS = 2  # as argparse uses for a wrong option


class UserError(Exception):
    """A problem the user has to fix, printed as one line ``error: ...`` without the usage (exit status 2)."""


def shift_times(text: str) -> str:
    """--shifts, checked while parsing: ``06:00,14:00,22:00`` or ``none``."""
    try:
        ShiftSchedule.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def positive_seconds(text: str) -> float:
    """--stats-window, checked while parsing: a number of seconds > 0."""
    value = _seconds(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    """--drain-timeout, checked while parsing: a number of seconds >= 0."""
    value = _seconds(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0; got {text!r}")
    return value


def non_negative_milliseconds(text: str) -> float:
    """--max-batch-delay-ms, checked while parsing: a finite number of milliseconds >= 0."""
    value = _seconds(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds >= 0; got {text!r}")
    return value


def positive_integer(text: str) -> int:
    """--max-batch, checked while parsing: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")  # fails both checks, which then echo the text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"run folder to load (default: the newest run in {DEFAULT_RUNS_DIR}/)")
    parser.add_argument("--source", required=True,
                        help="where parts come from: an image file, a glob ('parts/*.png'), a folder (all files, "
                             "sorted), watch:DIR (the files waiting in DIR that the journal has no result for, "
                             "then each new file once fully written), camera:N, a video file or a stream URL")
    parser.add_argument("--decision", choices=("calibrated", "seed"), default="calibrated",
                        help="decision rule: the run's calibrated threshold and blob area, or the seed's fixed rule")
    parser.add_argument("--runtime", choices=("auto", "tensorflow", "onnx", "openvino"), default="auto",
                        help="what computes the model and its anomaly map: the run's export in RUN/export/ (written "
                             "by train.py --export; needs only requirements-line.txt, no TensorFlow) or the Keras "
                             "model with TensorFlow; auto: the export when it is current and its runtime installed "
                             "(ONNX Runtime first), else TensorFlow (default: auto)")
    parser.add_argument("--images", choices=IMAGE_CHOICES, default="none",
                        help="publish input, reconstruction, residual and defect images for no part, NOK parts "
                             "only, or every part (default: none)")
    parser.add_argument("--journal", type=Path,
                        help="JSON Lines file every result is appended to before it is published "
                             "(default: logs/<topic prefix with / as _>.jsonl)")
    parser.add_argument("--shifts", type=shift_times, default=DEFAULT_SHIFTS,
                        help="local shift start times; at each one the shift's stats are published and the counters "
                             f"reset; 'none' for no shifts (default: {DEFAULT_SHIFTS})")
    parser.add_argument("--stats-window", type=positive_seconds, default=60.0, metavar="SECONDS",
                        help="sliding window for parts per minute (default: 60)")
    parser.add_argument("--drain-timeout", type=non_negative_seconds, default=10.0, metavar="SECONDS",
                        help="at the end, how long to wait for the broker to acknowledge pending results; what is "
                             "left is delivered by the next run with the same journal (default: 10)")
    parser.add_argument("--max-batch-delay-ms", type=non_negative_milliseconds,
                        default=DEFAULT_MAX_BATCH_DELAY_S * 1000.0, metavar="MS",
                        help="parts that arrive together are inspected in one batch; none waits longer than this "
                             "for others to join it; 0: batch only parts already waiting (default: %(default)g)")
    parser.add_argument("--max-batch", type=positive_integer, metavar="N",
                        help="at most N parts per batch, also the model's batch size (default: the Inspector's, 8)")
    mqtt = parser.add_argument_group("MQTT (results are published only with --mqtt-host)")
    mqtt.add_argument("--mqtt-host", help="broker host name or address")
    mqtt.add_argument("--mqtt-port", type=int, help="broker port (default: 1883, or 8883 with --tls)")
    mqtt.add_argument("--topic-prefix", default=DEFAULT_TOPIC_PREFIX, help="topic prefix P (default: %(default)s)")
    mqtt.add_argument("--client-id", default="", help="MQTT client id (default: one chosen by the broker)")
    mqtt.add_argument("--tls", action="store_true", help="connect with TLS")
    mqtt.add_argument("--ca", type=Path, help="CA certificate file for --tls (default: the system's CAs)")
    mqtt.add_argument("--cert", type=Path, help="client certificate file for --tls (with --key)")
    mqtt.add_argument("--key", type=Path, help="client private key file for --tls (with --cert)")
    mqtt.add_argument("--username", help="broker user name")
    mqtt.add_argument("--password-file", type=Path,
                      help="file holding the broker password (kept off the command line)")
    return parser


def mqtt_settings(arguments: argparse.Namespace) -> MqttSettings | None:
    """MqttSettings from the flags, or None without --mqtt-host (then the MQTT flags must be absent)."""
    if arguments.mqtt_host is None:
        given = [flag for flag, value in (("--mqtt-port", arguments.mqtt_port), ("--tls", arguments.tls),
                                          ("--username", arguments.username), ("--ca", arguments.ca))
                 if value not in (None, False)]
        if given:
            raise ValueError(f"{', '.join(given)} given without --mqtt-host")
        return None
    return MqttSettings(host=arguments.mqtt_host, port=arguments.mqtt_port or (8883 if arguments.tls else 1883),
                        topic_prefix=arguments.topic_prefix, client_id=arguments.client_id, tls=arguments.tls,
                        ca=arguments.ca, cert=arguments.cert, key=arguments.key, username=arguments.username,
                        password_file=arguments.password_file)


# ---------------------------------------------------------------- checks before the model is loaded


def check_run_folder(model: str | None) -> tuple[Path, str]:
    """The run folder --model names (default: the newest run) and its model name; UserError saying what to do."""
    try:
        run_folder = resolve_run(model)
    except ValueError as error:  # no run, or not a run folder: the message says what to pass
        raise UserError(str(error)) from None
    config_path = run_folder / CONFIG_FILE
    try:
        model_name = read_json(config_path)["model"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{config_path} cannot be read ({error!r}): the run folder is damaged; copy it again, "
                        "retrain, or pass another --model") from None
    for name in (MODEL_FILE, ENCODER_FILE):
        check_keras_file(run_folder / name)
    return run_folder, str(model_name)


def check_keras_file(path: Path) -> None:
    """A .keras file is a zip archive: a truncated or damaged one is found here, in a second, not deep in Keras."""
    if not path.exists():
        return  # encoder.keras is optional; resolve_run made sure model.keras is there
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every member and checks its CRC
            problem = f"{damaged} in it is corrupt" if damaged else None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        problem = str(error)
    if problem:
        raise UserError(f"{path} is damaged ({problem}): it is not the Keras file train.py wrote; copy the run "
                        "folder again, retrain, or pass another --model")


def check_journal(path: Path) -> None:
    """Open (creating it) and close the journal, so that an unwritable one fails before the model is loaded."""
    try:
        Journal(path).close()
    except OSError as error:
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
        raise UserError(f"cannot write the journal {path}: {error.strerror or error}{where}; pass --journal a "
                        "file in a folder this user can write") from None
    except ValueError as error:  # in use by another running line
        raise UserError(f"{error}: stop that line first, or give this one its own --journal") from None


def check_mqtt(settings: MqttSettings) -> None:
    """UserError if the broker rejects the credentials or its certificate; a warning if it cannot be reached."""
    try:
        why = check_broker(settings)
    except BrokerRejectedError as error:
        raise UserError(f"{error}; nothing was inspected") from None
    except OSError as error:  # an unreadable --password-file, a --ca/--cert/--key that is not PEM
        raise UserError(f"cannot set up the MQTT connection ({error}); check --ca, --cert, --key and "
                        "--password-file") from None
    if why:
        log.warning("MQTT broker %s cannot be reached now: %s; the line starts anyway, keeps every result in its "
                    "journal and delivers it when the broker is back", settings.address, why)


def start_line(run_folder: Path, model_name: str, journal: Path, mqtt: MqttSettings | None) -> str:
    """The first line printed: which run, which journal, which broker."""
    if mqtt is None:
        target = "no MQTT"
    else:
        target = (f"mqtt={mqtt.address} prefix={mqtt.topic_prefix}" + (" tls" if mqtt.tls else "")
                  + (f" user={mqtt.username}" if mqtt.username else ""))
    return f"start run={run_folder} model={model_name} journal={journal} {target}"


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return USER_ERROR_STATUS


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        settings = mqtt_settings(arguments)
    except ValueError as error:
        parser.error(str(error))
    journal = arguments.journal or default_journal_path(settings.topic_prefix if settings else DEFAULT_TOPIC_PREFIX)
    try:
        run_folder, model_name = check_run_folder(arguments.model)
        check_journal(journal)
        if settings is not None:
            check_mqtt(settings)
        print(start_line(run_folder, model_name, journal, settings), flush=True)
        return run_line(source=arguments.source, model=str(run_folder), mqtt=settings, images=arguments.images,
                        journal=journal, shifts=arguments.shifts, decision=arguments.decision,
                        stats_window_s=arguments.stats_window, drain_timeout_s=arguments.drain_timeout,
                        runtime=arguments.runtime, max_batch=arguments.max_batch,
                        max_batch_delay_ms=arguments.max_batch_delay_ms)
    except UserError as error:
        return fail(str(error))
    except BrokerRejectedError as error:  # while running: the part that met it is journaled too
        return fail(f"{error}; every journaled result stays in {journal} for the next run")
    except OSError as error:  # e.g. the disk filled up under the journal
        return fail(f"the line stopped: {error}; every journaled result stays in {journal} for the next run")
    except ValueError as error:  # e.g. a --source that names nothing, a model file Keras cannot load
        return fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
