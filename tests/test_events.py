"""Schema v1 codec: valid events round-trip, and anything else is rejected with its reason."""
import msgpack
import pytest
from hypothesis import given

from streams.events import MAX_ITEMS, Event, RejectedEvent, decode, encode
from tests.fixtures.events import junk_payloads, valid_events

TS = 1_700_000_000.0


def pack(wire) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


def click(**changes) -> dict:
    return {"v": 1, "type": "click", "user": "u1", "session": 7, "ts": TS, "item": "sku-1", **changes}


@given(valid_events())
def test_valid_events_round_trip(event):
    assert decode(encode(event)) == event


@given(junk_payloads)
def test_junk_is_rejected_or_decoded_never_crashes(payload):
    try:
        event = decode(payload)
    except RejectedEvent as rejected:
        assert rejected.reason
    else:
        assert decode(encode(event)) == event


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty"),
    (b"\xc1", "malformed_msgpack"),
    (pack(click()) + b"\x00", "malformed_msgpack"),
    (pack([1, 2]), "not_a_map"),
    (pack(click(v=2)), "unsupported_version"),
    (pack({k: v for k, v in click().items() if k != "v"}), "bad_field:v"),
    (pack(click(type="refund")), "unknown_type"),
    (pack(click(color="red")), "unknown_field"),
    (pack(click(user="")), "bad_field:user"),
    (pack(click(user="x" * 65)), "bad_field:user"),
    (pack(click(user=True)), "bad_field:user"),
    (pack(click(user=-1)), "bad_field:user"),
    (pack(click(session=1.5)), "bad_field:session"),
    (pack(click(ts=float("nan"))), "bad_field:ts"),
    (pack(click(ts=5.0)), "bad_field:ts"),
    (pack(click(item=None)), "bad_field:item"),
    (pack({**click(type="search"), "query": " "}), "unknown_field"),
    (pack({"v": 1, "type": "search", "user": 1, "session": 1, "ts": TS, "query": " "}), "bad_field:query"),
    (pack({"v": 1, "type": "purchase", "user": 1, "session": 1, "ts": TS, "items": []}), "bad_field:items"),
    (pack({"v": 1, "type": "purchase", "user": 1, "session": 1, "ts": TS, "items": [1] * (MAX_ITEMS + 1)}),
     "bad_field:items"),
    (pack({"v": 1, "type": "purchase", "user": 1, "session": 1, "ts": TS, "items": [1], "value": -3}),
     "bad_field:value"),
    (b"\x00" * (64 * 1024 + 1), "too_large"),
])
def test_rejections_carry_a_stable_reason(payload, reason):
    with pytest.raises(RejectedEvent) as rejected:
        decode(payload)
    assert rejected.value.reason == reason


def test_each_type_decodes_to_its_fields():
    search = decode(pack({"v": 1, "type": "search", "user": 3, "session": "s", "ts": TS, "query": "red shoes",
                          "shown": ["a", 2]}))
    purchase = decode(pack({"v": 1, "type": "purchase", "user": 3, "session": "s", "ts": int(TS),
                            "items": [5, "b"], "value": 19.5}))
    assert decode(pack(click())) == Event("click", "u1", 7, TS, items=("sku-1",))
    assert search == Event("search", 3, "s", TS, query="red shoes", shown=("a", 2))
    assert purchase == Event("purchase", 3, "s", TS, items=(5, "b"), value=19.5)
