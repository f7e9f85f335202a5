"""Synonyms, rules and search analytics below the web app: parsing and expansion, the rules stage over a ranked
product list (hide, boost/bury, pins exactly once), rule dates, the versioned and audited store and the analytics
log, each on SQLite and PostgreSQL (tests/pg_server.py)."""
from datetime import datetime, timedelta, timezone

import pytest

from engine.merch import MerchError, MerchNotFound, MerchSource, MerchStore, Rule, Synonym, expand, shape
from engine.merch.analytics import AnalyticsLog, ClickRow, SearchRow
from engine.store import Hit
from engine.store.hybrid import Group

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def products(*specs):
    """Candidate products (engine.store.hybrid.Group) ranked as given: (product_id, score, category)."""
    out = []
    for rank, (pid, score, category) in enumerate(specs, 1):
        payload = {"product_id": pid, "category": category, "price": float(rank * 10),
                   "attributes": {"colour": "red" if rank % 2 else "blue"}}
        out.append(Group(pid, [Hit(f"pt-{pid}", score, payload)]))
    return out


RANKED = products(("a", 0.9, "dress"), ("b", 0.8, "mug"), ("c", 0.7, "dress"), ("d", 0.6, "mug"), ("e", 0.5, "hat"))


def ids(items):
    return [str(g.key) for g in items]


# --- synonyms ------------------------------------------------------------------------------------------------------


def test_one_way_and_two_way_synonyms_expand_the_lexical_text():
    cup = Synonym.parse("Cup => mug, beaker")
    shoes = Synonym.parse("trainers, sneakers, running shoes")
    assert (cup.kind, cup.terms, cup.targets, cup.text) == ("oneway", ("cup",), ("mug", "beaker"), "cup => mug, beaker")
    assert expand("blue cup", [cup, shoes]).text == "blue cup mug beaker"
    assert expand("a mug", [cup]).text == "a mug"  # one-way: mug does not search cup
    found = expand("red sneakers", [cup, shoes])
    assert found.text == "red sneakers trainers running shoes" and found.applied == [shoes]
    assert expand("running shoes", [shoes]).text == "running shoes trainers sneakers"  # a phrase term
    assert expand("cupboard", [cup]).text == "cupboard"  # whole words only
    assert expand("cup mug", [cup]).text == "cup mug beaker"  # words already there are not repeated


@pytest.mark.parametrize("text, message", [("sneakers", "at least two terms"), ("cup => ", "empty term"),
                                           ("a => b => c", "more than one"), ("", "one-way")])
def test_a_malformed_synonym_names_the_fix(text, message):
    with pytest.raises(MerchError, match=message):
        Synonym.parse(text)


# --- rules ---------------------------------------------------------------------------------------------------------


def test_hide_then_boost_and_bury_then_pins_each_product_once():
    rules = [Rule("no hats", "always", "", "hide", category="hat"),
             Rule("mugs up", "always", "", "boost", category="mug", amount=0.25),
             Rule("a down", "always", "", "bury", products=("a",), amount=0.5),
             Rule("c second", "always", "", "pin", products=("c",), position=2)]
    shaped = shape(RANKED, len(RANKED), rules)
    # hide e; mugs b 1.05, d 0.85; a 0.4; then c pinned to position 2
    assert ids(shaped.products) == ["b", "c", "d", "a"] and shaped.matched == 4
    # ranked by score + boost, shown with its own score: the relevance to the query, not the rule's arithmetic
    assert shaped.products[0].score == pytest.approx(0.8) and shaped.products[0].hits[0].score == pytest.approx(0.8)
    assert {a.rule.name: a.products for a in shaped.applied} == {
        "no hats": ["e"], "mugs up": ["b", "d"], "a down": ["a"], "c second": ["c"]}
    assert ids(shape(RANKED, 2, []).products) == ids(RANKED)  # no rule: the ranking as it was


def test_pins_take_their_positions_and_a_hidden_product_is_not_pinned():
    extra = {str(g.key): g for g in products(("z", 0.1, "hat"))}
    rules = [Rule("pins", "always", "", "pin", products=("z", "d"), position=1),
             Rule("hide b", "always", "", "hide", products=("b",)),
             Rule("pin b", "always", "", "pin", products=("b",), position=3)]
    shaped = shape(RANKED, len(RANKED), rules, extra)
    assert ids(shaped.products) == ["z", "d", "a", "c", "e"]  # z from outside the window; b hidden wins over its pin
    assert len(set(ids(shaped.products))) == len(shaped.products)
    far = shape(RANKED, len(RANKED), [Rule("deep", "always", "", "pin", products=("a",), position=50)])
    assert ids(far.products) == ["b", "c", "d", "e", "a"]  # past the end: last


def test_boosted_and_pinned_products_join_the_matches_and_a_buried_match_stays_one():
    # a and b match the query (above the floor); c, d, e are related items
    boost = Rule("hats up", "always", "", "boost", category="hat", amount=0.05)
    shaped = shape(RANKED, 2, [boost])
    assert ids(shaped.products) == ["a", "b", "e", "c", "d"] and shaped.matched == 3  # e 0.55: a match, last
    bury = Rule("a down", "always", "", "bury", products=("a",), amount=5.0)
    shaped = shape(RANKED, 2, [bury])
    assert ids(shaped.products) == ["b", "a", "c", "d", "e"] and shaped.matched == 2  # the end of the matches
    pins = [Rule("d 2nd", "always", "", "pin", products=("d",), position=2),
            Rule("b 5th", "always", "", "pin", products=("b",), position=5)]
    shaped = shape(RANKED, 2, pins)
    assert ids(shaped.products) == ["a", "d", "c", "e", "b"] and shaped.matched == 2  # d joins, b leaves them


def test_a_concept_filter_selects_the_concepts_products():
    members = {"<aurora>": frozenset({"c", "e"})}
    rule = Rule("aurora up", "contains", "dress", "boost", concept="<aurora>", amount=1.0)
    assert ids(shape(RANKED, 5, [rule], members=members).products) == ["c", "e", "a", "b", "d"]
    red = Rule("red aurora", "always", "", "hide", concept="<aurora>", colour="red")  # c and e are red: both
    assert ids(shape(RANKED, 5, [red], members=members).products) == ["a", "b", "d"]
    assert ids(shape(RANKED, 5, [rule], members={}).products) == ids(RANKED)  # no products known: none selected
    with pytest.raises(MerchError, match="placeholder"):
        Rule("r", "always", "", "boost", concept="aurora")
    assert Rule.from_json(rule.to_json() | {"id": None}).concept == "<aurora>"


def test_a_rule_matches_its_query_and_only_between_its_dates():
    contains = Rule("r", "contains", "Red Dress", "boost", category="dress")
    assert contains.applies("long red dress", [], NOW) and not contains.applies("red long dress", [], NOW)
    exact = Rule("r", "exact", "red dress", "boost", category="dress")
    assert exact.applies("Red  Dress", [], NOW) and not exact.applies("red dress sale", [], NOW)
    concept = Rule("r", "concept", "<aurora>", "boost", category="dress")
    assert concept.applies("<aurora> dress", ["<aurora>"], NOW) and not concept.applies("aurora", [], NOW)
    expired = Rule("r", "always", "", "hide", products=("a",), end=(NOW - timedelta(seconds=1)).isoformat())
    assert not expired.applies("x", [], NOW)
    starts = Rule("r", "always", "", "hide", products=("a",), start="2026-12-08", end="2026-12-09T00:00")
    assert not starts.applies("x", [], NOW) and starts.applies("x", [], NOW + timedelta(days=1))
    assert not Rule("r", "always", "", "hide", products=("a",), enabled=False).applies("x", [], NOW)


@pytest.mark.parametrize("fields, message", [
    (dict(action="pin"), "product ids to pin"), (dict(action="boost"), "products .* or a filter"),
    (dict(action="pin", products=("a",), position=0), "'position'"), (dict(match="sometimes", action="hide"), "'match'"),
    (dict(action="hide", products=("a",), start="2026-12-09", end="2026-12-08"), "swap"),
    (dict(action="hide", products=("a",), end="next tuesday"), "ISO date-time"),
    (dict(match="concept", pattern="aurora", action="hide", products=("a",)), "placeholder")])
def test_a_malformed_rule_names_the_field(fields, message):
    with pytest.raises(MerchError, match=message):
        Rule(**{"name": "r", "match": "contains", "pattern": "cup", **fields})


def test_a_rule_from_json_refuses_unknown_fields():
    with pytest.raises(MerchError, match="unknown rule field"):
        Rule.from_json({"name": "r", "match": "always", "pattern": "", "action": "hide", "products": ["a"],
                        "colur": "red"})
    rule = Rule.from_json({"name": "r", "match": "always", "pattern": "", "action": "hide", "products": "a, b"})
    assert rule.products == ("a", "b")


# --- the store: versioned, audited, read by every process -------------------------------------------------------


def test_the_store_versions_and_audits_every_change(tmp_path, database_url):
    store = MerchStore(tmp_path / "registry.sqlite3", database_url)
    other = MerchStore(tmp_path / "registry.sqlite3", database_url)  # another process's view of the same database
    ticks = [0.0]
    source = MerchSource(other, refresh_s=1.0, clock=lambda: ticks[0], now=lambda: NOW)
    assert source.expand("blue cup").text == "blue cup" and store.version() == 0
    cup = store.add_synonym(Synonym.parse("cup => mug"), actor="alice")
    rule = store.add_rule(Rule("mugs", "contains", "cup", "boost", category="mug"), actor="bob")
    assert store.version() == 2 and other.synonyms() == [cup] and other.rules() == [rule]
    assert source.expand("blue cup").text == "blue cup"  # checked less than refresh_s ago: not re-read yet
    ticks[0] = 1.0
    assert source.expand("blue cup").text == "blue cup mug" and source.rules_for("a cup", []) == [rule]
    updated = store.update_rule(rule.id, Rule("mugs", "contains", "cup", "boost", category="mug", enabled=False), "bob")
    store.remove_synonym(cup.id, actor="alice")
    ticks[0] = 2.0
    assert source.rules_for("a cup", []) == [] and source.expand("blue cup").text == "blue cup"
    assert store.rule(rule.id) == updated and not updated.enabled
    trail = [(a["actor"], a["action"], a["kind"], a["item_id"]) for a in store.audit()]
    assert trail == [("alice", "remove", "synonym", cup.id), ("bob", "update", "rule", rule.id),
                     ("bob", "add", "rule", rule.id), ("alice", "add", "synonym", cup.id)]
    assert store.audit()[2]["detail"]["category"] == "mug"
    with pytest.raises(MerchNotFound):
        store.remove_rule(999, "bob")
    replaced = store.add_synonyms([Synonym.parse("a, b"), Synonym.parse("c => d")], "carol", replace=True)
    assert [s.text for s in store.synonyms()] == ["a, b", "c => d"] == [s.text for s in replaced]


def test_a_database_that_cannot_be_read_keeps_the_last_synonyms(tmp_path, caplog):
    store = MerchStore(tmp_path / "registry.sqlite3")
    store.add_synonym(Synonym.parse("cup => mug"), "alice")
    ticks = [0.0]
    source = MerchSource(store, clock=lambda: ticks[0])
    assert source.expand("cup").text == "cup mug"
    (tmp_path / "registry.sqlite3").unlink()
    (tmp_path / "registry.sqlite3").mkdir()  # unreadable as a database
    ticks[0] = 5.0
    assert source.expand("cup").text == "cup mug" and "serving the last ones read" in caplog.text


# --- the analytics log ------------------------------------------------------------------------------------------


def row(sid, ts, query, results=3, concept=None):
    return SearchRow(sid, ts, query, {"retrieval": "hybrid"}, {}, results, 12.5, None, concept)


def test_the_analytics_report_counts_queries_clicks_and_concepts(tmp_path, database_url):
    log = AnalyticsLog(tmp_path / "registry.sqlite3", database_url)
    day = 86400.0
    t0 = 1_800_000_000.0
    log.write([row("s1", t0, "Red Dress"), row("s2", t0 + 10, "red  dress"), row("s3", t0 + day, "zzqx", results=0),
               row("s4", t0 + day, "<aurora> dress", concept="<aurora>"), row("s5", t0 + 2 * day, "mug"),
               row("old", t0 - 40 * day, "red dress")],
              [ClickRow("s1", t0 + 1, "p1", 1), ClickRow("s1", t0 + 2, "p2", 4), ClickRow("s4", t0 + day, "p3", 2)])
    report = log.report(t0 - 1, t0 + 3 * day)
    assert (report.searches, report.clicked_searches, report.clicks, report.zero_results) == (5, 2, 3, 1)
    assert report.ctr == pytest.approx(2 / 5) and report.mean_position == pytest.approx(7 / 3)
    assert report.top[0] == {"query": "red dress", "searches": 2, "clicks": 2, "zero": 0}
    assert report.zero == [{"query": "zzqx", "searches": 1}]
    assert report.no_clicks == [{"query": "mug", "searches": 1}]
    assert report.concepts == [{"concept": "<aurora>", "searches": 1, "clicks": 1}]
    assert [(d["searches"], d["clicks"]) for d in report.days] == [(2, 2), (2, 1), (1, 0)]
    csv_text = log.export_csv(t0 - 1, t0 + 3 * day)
    assert csv_text.splitlines()[0].startswith("search_id,time,query") and "s1," in csv_text and "old" not in csv_text
    assert "1 4" in csv_text  # s1's clicked positions
    assert log.prune(t0 - day) == 1 and log.report(0, t0 + 3 * day).searches == 5
