"""Pure logic of the catalogue: its record schema, what the worker holds of it, what a shopper is
shown (nothing unbuyable, still k items, a reason each) and the files `catalog load` reads."""
import json
from types import SimpleNamespace

import msgpack
import pytest

from console.cli import main
from serving.repository import ModelRepository
from serving.wire import ADDED_ITEMS
from shopguide.catalogue import item_rows
from shopguide.errors import UserError
from streams.added_items import AddedItems
from streams.catalog import Catalog
from streams.catalog_schema import CatalogItem, decode, encode
from streams.events import RejectedEvent
from streams.picks import pick
from streams.popularity import Popularity


def wire(**changes) -> dict:
    return {"v": 1, "item": "sku-1", "title": "red ball", "categories": ["toys"], "in_stock": True, **changes}


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def test_records_round_trip_and_a_tombstone_delists():
    record = CatalogItem(31331, "kite", ("toys", "outdoor"), False, brand="Acme", price=9.5)
    assert decode(b"31331", encode(record)) == ("31331", record)
    assert decode(b"sku-9", None) == ("sku-9", None)


@pytest.mark.parametrize("key, payload, reason", [
    (b"sku-1", b"", "empty"),
    (b"sku-1", b"\xc1", "malformed_msgpack"),
    (b"sku-1", pack([1]), "not_a_map"),
    (b"sku-1", pack(wire(v=2)), "unsupported_version"),
    (b"sku-1", pack(wire(colour="red")), "unknown_field"),
    (b"sku-1", pack({k: v for k, v in wire().items() if k != "title"}), "bad_field:title"),
    (b"sku-1", pack(wire(title=" ")), "bad_field:title"),
    (b"sku-1", pack(wire(title="x" * 201)), "bad_field:title"),
    (b"sku-1", pack(wire(categories=["ok", ""])), "bad_field:categories"),
    (b"sku-1", pack(wire(categories=["c"] * 33)), "bad_field:categories"),
    (b"sku-1", pack(wire(in_stock=1)), "bad_field:in_stock"),
    (b"sku-1", pack(wire(price=-1)), "bad_field:price"),
    (b"sku-1", pack(wire(price=float("inf"))), "bad_field:price"),
    (b"sku-1", pack(wire(brand=7)), "bad_field:brand"),
    (b"sku-2", pack(wire()), "key_mismatch"),
    (b"\xff", pack(wire()), "bad_key"),
    (None, None, "bad_key"),
])
def test_rejections_carry_a_stable_reason(key, payload, reason):
    with pytest.raises(RejectedEvent) as rejected:
        decode(key, payload)
    assert rejected.value.reason == reason


def test_the_catalogue_holds_only_what_cannot_be_bought():
    catalog = Catalog()
    catalog.apply("a", CatalogItem("a", "A", in_stock=False))
    catalog.apply("b", None)
    catalog.apply("c", CatalogItem("c", "C"))
    assert catalog.unbuyable == {"a": "out_of_stock", "b": "delisted"}
    catalog.apply("a", CatalogItem("a", "A"))
    catalog.apply("b", CatalogItem("b", "B", in_stock=False))
    assert catalog.unbuyable == {"b": "out_of_stock"} and +catalog.counts == {"out_of_stock": 1}
    assert catalog.titles == {"a": "A", "b": "B", "c": "C"}
    catalog.apply("c", None)
    assert "c" not in catalog.titles


def session(items=("v1", "v2"), purchased=()):
    return SimpleNamespace(items=items, purchased=purchased)


def popular(*items) -> Popularity:
    popularity = Popularity(refresh_s=0)
    popularity.observe([item for n, item in enumerate(items) for _ in range(len(items) - n)])
    return popularity


def test_unbuyable_items_are_dropped_from_model_and_popular_items_and_k_is_kept():
    answer = (["m1", "gone", "m2", "bought", "m3"], [5.0, 4.0, 3.0, 2.0, 1.0])
    items, scores, reasons = pick(session(purchased=("bought",)), answer, 5, popular("p-out", "p1", "m1", "p2"),
                                  {"gone": "delisted", "p-out": "out_of_stock"})
    assert items == ["m1", "m2", "m3", "p1", "p2"]
    assert scores[:3] == [5.0, 3.0, 1.0]
    assert reasons == ["viewed:v2"] * 3 + ["popular"] * 2


def test_without_a_catalogue_everything_is_allowed_and_fallbacks_are_popular():
    items, _, reasons = pick(session(), None, 2, popular("p1", "p2", "p3"), Catalog().unbuyable)
    assert items == ["p1", "p2"] and reasons == ["popular", "popular"]


def test_a_model_item_has_no_reason_when_the_events_session_had_no_item():
    _, _, reasons = pick(session(items=()), (["m1"], [1.0]), 1, popular(), {})
    assert reasons == [None]


TITLES = {"m1": "Red racing car, 1:24", "m2": "wooden train set", "m3": "CAR-WASH playset", "m4": "the red baron"}


def test_model_items_whose_title_shares_a_word_with_the_steering_query_say_searched():
    answer = (["m1", "m2", "m3", "m4", "untitled"], [5.0, 4.0, 3.0, 2.0, 1.0])
    _, _, reasons = pick(session(), answer, 6, popular("p1"), {}, "Race car for the kids", TITLES)
    assert reasons == ["searched:Race car for the kids", "viewed:v2", "searched:Race car for the kids", "viewed:v2",
                       "viewed:v2", "popular"]
    _, _, reasons = pick(session(items=()), answer, 2, popular(), {}, "red train", TITLES)
    assert reasons == ["searched:red train", "searched:red train"]


def test_without_a_steering_query_or_a_shared_word_reasons_are_as_before():
    answer = (["m1", "m2"], [2.0, 1.0])
    assert pick(session(), answer, 2, popular(), {}, "", TITLES)[2] == ["viewed:v2"] * 2
    assert pick(session(items=()), answer, 2, popular(), {}, "the kite", TITLES)[2] == [None, None]


def test_items_the_version_knows_by_content_only_say_new_unless_the_query_names_them():
    answer = (["m1", "m2", "m3"], [3.0, 2.0, 1.0])
    assert pick(session(), answer, 4, popular("p1"), {}, "", TITLES, {"m2", "m3"})[2] == \
        ["viewed:v2", "new", "new", "popular"]
    assert pick(session(), answer, 3, popular(), {}, "car", TITLES, {"m2", "m3"})[2] == ["searched:car", "new", "searched:car"]
    assert pick(session(items=()), answer, 1, popular(), {}, "", TITLES, {"m1"})[2] == ["new"]


def test_added_items_are_read_once_per_answering_version_and_none_when_unreadable(tmp_path):
    models = ModelRepository(tmp_path)
    for version, added in ((2, None), (3, ["n1", 7])):
        (models.model_dir / str(version)).mkdir(parents=True)
        if added is not None:
            (models.model_dir / str(version) / ADDED_ITEMS).write_text(json.dumps(added))
    known = AddedItems(models)
    assert known.of(3) == {"n1", "7"} and known.of(2) == frozenset() and known.of(None) == frozenset()
    (models.model_dir / "3" / ADDED_ITEMS).write_text("not json")
    assert known.of(3) == frozenset() and known.of(9) == frozenset()
    (models.model_dir / "3" / ADDED_ITEMS).write_text('["n2"]')
    assert known.of(3) == {"n2"}  # read again once another version answered in between


def test_items_tsv_and_a_generic_csv_are_read_with_bad_rows_named(tmp_path):
    tsv = tmp_path / "items.tsv"
    tsv.write_text("item\tasin\ttext\tattributes\n4\tB0\tmagnetic easel\t1 2 3\n5\tB1\tshort\n")
    assert [(r.line, r.fields, r.problem) for r in item_rows(tsv)] == [
        (2, {"item": "4", "title": "magnetic easel", "categories": ["1", "2", "3"], "in_stock": True}, None),
        (3, None, "field_count")]
    csv = tmp_path / "items.csv"
    csv.write_text("item,title,price,in_stock,categories\nk1,Kite,9.5,no,toys|outdoor\nk2,Car,cheap,,\n")
    assert [(r.fields, r.problem) for r in item_rows(csv)] == [
        ({"item": "k1", "title": "Kite", "categories": ["toys", "outdoor"], "in_stock": False, "price": 9.5}, None),
        (None, "bad_field:price")]


@pytest.mark.parametrize("content, problem", [
    (b"", "empty catalogue"),
    (b"item,name\n1,x\n", "expected a header of distinct columns item,title"),
    (b"item,title\n1,ok\n2,\xff\n", ":3: not UTF-8 text"),
])
def test_a_file_that_cannot_be_read_is_one_line_naming_it(tmp_path, content, problem):
    path = tmp_path / "items.csv"
    path.write_bytes(content)
    with pytest.raises(UserError) as error:
        list(item_rows(path))
    assert str(error.value).startswith(str(path)) and problem in str(error.value) and "\n" not in str(error.value)


def test_load_stops_on_a_bad_header_before_reaching_kafka(tmp_path, capsys):
    path = tmp_path / "items.tsv"
    path.write_text("id\ttitle\n1\tx\n")
    assert main(["catalog", "load", "--data", str(path), "--bootstrap-servers", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err.strip() == (f"shopguide catalog: error: {path}: expected the header "
                                               "'item\\tasin\\ttext\\tattributes' of items.tsv")
