"""What a setting may hold: each Check is a test and the words for what it expects."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

# Kafka's own rule for topic names (and so for the app id, which prefixes the changelog's name).
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class Check:
    test: Callable[[Any], bool]
    expected: str

    def __call__(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def between(low: int, high: int | None = None) -> Check:
    if high is None:
        return Check(lambda v: v >= low, f"an integer >= {low}")
    return Check(lambda v: low <= v <= high, f"an integer from {low} to {high}")


SECONDS = Check(lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0")


def _port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _address(text: str) -> bool:
    host, _, port = text.strip().rpartition(":")
    return bool(host) and not any(c.isspace() for c in host) and _port(port)


PORT = between(1, 65535)
ADDRESS = Check(_address, "host:port with a port from 1 to 65535")
ADDRESSES = Check(lambda v: all(map(_address, v.split(","))), "host:port[,host:port...] with ports from 1 to 65535")
HOST = Check(lambda v: bool(v) and not any(c.isspace() for c in v), "a host name or address")
KAFKA_NAME = Check(lambda v: bool(_KAFKA_NAME.fullmatch(v)) and v not in (".", ".."),
                   "1-200 characters of A-Z a-z 0-9 . _ -")
ANY = Check(lambda v: True, "any value")


def one_of(*choices: str) -> Check:
    return Check(lambda v: v in choices, "one of " + ", ".join(choices))
