"""SpellingSource and the vocabulary artifact, on both store backends: the speller is rebuilt only when the
artifact's version (or the alias target, or the extra words) changes, in the background without blocking searches;
collections that keep their vocabulary in metadata (built before the artifact) still get a speller."""
import threading
import time

import pytest

import engine.query.spelling_source as spelling_source
from engine.query import QueryConfig
from engine.query.spelling_source import SpellingSource
from engine.store import open_store
from engine.vocabulary import METADATA_KEY, Vocabulary, read_vocabulary, vocabulary_version, write_vocabulary

ROWS = [{"title": "Aurora Striped Dress", "category": "dress"}, {"title": "Dune Backpack", "category": "backpack"}]


def vocabulary(*extra):
    v = Vocabulary()
    for row in [*ROWS, *extra]:
        v.add(row)
    return v


@pytest.fixture
def store(tmp_path, store_config):
    with open_store(store_config(tmp_path)) as s:
        for name in ("shop-1", "shop-2"):
            s.create_collection(name, dim=4)
        s.set_alias("shop", "shop-1")
        yield s


def source(store, **kw):
    return SpellingSource(store, QueryConfig(collection="shop", spelling_refresh_s=0.0), **kw)


def test_the_artifact_is_versioned_and_stays_out_of_the_metadata(store):
    assert vocabulary_version(store, "shop-1") is None and read_vocabulary(store, "shop-1") == (None, None)
    first = write_vocabulary(store, "shop-1", vocabulary())
    assert vocabulary_version(store, "shop-1") == first and first is not None
    version, read = read_vocabulary(store, "shop-1")
    assert version == first and read.counts == vocabulary().counts and read.terms == vocabulary().terms
    assert METADATA_KEY not in store.get_metadata("shop-1")
    second = write_vocabulary(store, "shop-1", vocabulary({"title": "Fjordo Lamp"}))
    assert second != first and "fjordo" in read_vocabulary(store, "shop-1")[1].counts


def test_rebuilt_only_when_the_version_changes_in_the_background(store):
    write_vocabulary(store, "shop-1", vocabulary())
    spelling = source(store)
    first = spelling.get()
    for _ in range(5):
        assert spelling.get() is first  # nothing changed: no rebuild
    assert spelling.builds == 1 and first.correct("fjordo lamp").corrected == "fjordo lamp"
    write_vocabulary(store, "shop-1", vocabulary({"title": "Fjordo Lamp"}))
    assert spelling.get() is first  # the new speller is built in the background; searches keep the old one
    spelling.wait()
    second = spelling.get()
    assert second is not first and spelling.builds == 2 and second.known("fjordo")
    assert spelling.get() is second and spelling.builds == 2


def test_a_rebuild_never_blocks_searches(store, monkeypatch):
    write_vocabulary(store, "shop-1", vocabulary())
    spelling = source(store)
    first = spelling.get()
    release = threading.Event()
    real = spelling_source.Speller

    def slow_speller(*args, **kwargs):
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(spelling_source, "Speller", slow_speller)
    write_vocabulary(store, "shop-1", vocabulary({"title": "Fjordo Lamp"}))
    t0 = time.perf_counter()
    assert spelling.get() is first and spelling.get() is first  # the build is stuck, the searches are not
    assert time.perf_counter() - t0 < 2.0
    release.set()
    spelling.wait()
    assert spelling.get().known("fjordo")


def test_the_first_build_never_blocks_a_search_past_the_wait(store, monkeypatch, caplog):
    write_vocabulary(store, "shop-1", vocabulary())
    spelling = SpellingSource(store, QueryConfig(collection="shop", spelling_refresh_s=0.0,
                                                 spelling_first_wait_s=0.05))
    release = threading.Event()
    real = spelling_source.Speller

    def slow_speller(*args, **kwargs):  # a large catalog's first build
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(spelling_source, "Speller", slow_speller)
    t0 = time.perf_counter()
    with caplog.at_level("INFO", logger=spelling_source.__name__):
        assert spelling.get() is None and spelling.warming  # searched uncorrected meanwhile
    assert spelling.get() is None and time.perf_counter() - t0 < 2.0
    assert "searches run without typo correction until it is ready" in caplog.text
    release.set()
    spelling.wait()
    assert not spelling.warming and spelling.get().correct("drsss").corrected == "dress" and spelling.builds == 1


def test_a_stale_build_finishing_late_is_dropped(store, monkeypatch):
    write_vocabulary(store, "shop-1", vocabulary())
    spelling = source(store)
    first = spelling.get()
    gates = [threading.Event(), threading.Event()]
    real = spelling_source.Speller
    calls = []

    def gated_speller(*args, **kwargs):
        gate = gates[len(calls)]
        calls.append(gate)
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(spelling_source, "Speller", gated_speller)
    write_vocabulary(store, "shop-1", vocabulary({"title": "Fjordo Lamp"}))
    spelling.get()
    older = spelling._building[1]
    while not calls:  # the older build has read its vocabulary and waits at its gate
        time.sleep(0.01)
    write_vocabulary(store, "shop-1", vocabulary({"title": "Quokkaberry Parasol"}))
    spelling.get()  # a newer version while the older build still runs
    gates[1].set()
    spelling.wait()
    gates[0].set()
    older.join(10)
    assert spelling.get() is not first and spelling.get().known("quokkaberry")  # not the older one


def test_an_alias_switch_and_new_extra_words_rebuild(store):
    write_vocabulary(store, "shop-1", vocabulary())
    write_vocabulary(store, "shop-2", vocabulary({"title": "Quokkaberry Parasol"}))
    names = ["aurora"]
    spelling = source(store, extra_words=lambda: list(names))
    assert not spelling.get().known("quokkaberry") and not spelling.get().known("newcomer")
    store.set_alias("shop", "shop-2")  # a reindex's switch
    spelling.get()
    spelling.wait()
    assert spelling.get().known("quokkaberry")
    names.append("newcomer")  # a concept registered
    spelling.get()
    spelling.wait()
    assert spelling.get().correct("newcomr dress").corrected == "newcomer dress"


def test_a_collection_with_its_vocabulary_in_metadata_still_gets_a_speller(store):
    store.set_metadata("shop-1", vocabulary().to_metadata())  # built before the artifact
    spelling = source(store)
    speller = spelling.get()
    assert speller is not None and speller.correct("drsss").corrected == "dress"
    assert speller.known("dresses")  # the analyser's stems are computed from the old words
    spelling.get()
    assert spelling.builds == 1  # read once per alias target, not at every refresh
    write_vocabulary(store, "shop-1", vocabulary())  # the next index run moves it out of the metadata
    assert store.get_metadata("shop-1").get(METADATA_KEY) is None


def test_no_collection_no_speller(store):
    spelling = SpellingSource(store, QueryConfig(collection="nothing", spelling_refresh_s=0.0))
    assert spelling.get() is None


def test_server_artifacts_of_dropped_collections_are_removed_on_the_next_write(tmp_path, make_store_config):
    from engine.store.artifacts import ARTIFACTS

    with open_store(make_store_config("server", tmp_path)) as store:
        for name in ("shop-1", "shop-2"):
            store.create_collection(name, dim=4)
            write_vocabulary(store, name, vocabulary())
        assert store.count(ARTIFACTS) == 4  # a version point and a data point each
        store.drop_collection("shop-1")  # a reindex drops the old collection
        write_vocabulary(store, "shop-2", vocabulary({"title": "Fjordo Lamp"}))
        assert store.count(ARTIFACTS) == 2 and vocabulary_version(store, "shop-1") is None
        assert "fjordo" in read_vocabulary(store, "shop-2")[1].counts
