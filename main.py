"""Run the inspection line: inspect every part a source delivers and publish the results over MQTT.

    python main.py --source data/demo/test --mqtt-host 127.0.0.1
    python main.py --source watch:/srv/line1/incoming --mqtt-host broker.plant --tls --ca ca.pem \\
                   --username line1 --password-file line1.secret --images nok

Without --mqtt-host the line inspects, journals and prints one line per part. Ctrl-C or SIGTERM stops it
cleanly (final stats, status "offline", journal flushed, exit status 0). Topics: see utils/mqtt.py or the README.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.line import DEFAULT_SHIFTS, IMAGE_CHOICES, run_line
from utils.mqtt import DEFAULT_TOPIC_PREFIX, MqttSettings
from utils.run import DEFAULT_RUNS_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"run folder to load (default: the newest run in {DEFAULT_RUNS_DIR}/)")
    parser.add_argument("--source", required=True,
                        help="where parts come from: an image file, a glob ('parts/*.png'), a folder (all files, "
                             "sorted), watch:DIR (new files as they arrive), camera:N, a video file or a stream URL")
    parser.add_argument("--decision", choices=("calibrated", "seed"), default="calibrated",
                        help="decision rule: the run's calibrated threshold and blob area, or the seed's fixed rule")
    parser.add_argument("--images", choices=IMAGE_CHOICES, default="none",
                        help="publish input, reconstruction, residual and defect images for no part, NOK parts "
                             "only, or every part (default: none)")
    parser.add_argument("--journal", type=Path,
                        help="JSON Lines file every result is appended to before it is published "
                             "(default: logs/<topic prefix with / as _>.jsonl)")
    parser.add_argument("--shifts", default=DEFAULT_SHIFTS,
                        help="local shift start times; at each one the shift's stats are published and the counters "
                             f"reset; 'none' for no shifts (default: {DEFAULT_SHIFTS})")
    parser.add_argument("--stats-window", type=float, default=60.0, metavar="SECONDS",
                        help="sliding window for parts per minute (default: 60)")
    parser.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="at the end, how long to wait for the broker to acknowledge pending results; what is "
                             "left is delivered by the next run with the same journal (default: 10)")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return run_line(source=arguments.source, model=arguments.model, mqtt=mqtt_settings(arguments),
                        images=arguments.images, journal=arguments.journal, shifts=arguments.shifts,
                        decision=arguments.decision, stats_window_s=arguments.stats_window,
                        drain_timeout_s=arguments.drain_timeout)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
