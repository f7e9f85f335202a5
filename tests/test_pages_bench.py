"""bench/pages.py: the page-depth metrics, on a stand-in search service whose pages are scripted."""
from types import SimpleNamespace

import pytest

from bench.pages import PAGE, measure, repeats, table
from bench.relevance import BenchQuery


class Scripted:
    """A search service over one fixed ranking of products: `shift` > 0 makes page k start `shift` products early
    (repeats, as the window that grew with depth did); `stray` answers a past-the-end page with the first products
    and a note (as before); `count` is the facet count, `categories` its category counts."""

    def __init__(self, ranking, shift=0, stray=False, count=None, categories=None):
        self.ranking, self.shift, self.stray = ranking, shift, stray
        self.count = len(ranking) if count is None else count
        self.categories = categories or {}

    def search(self, request):
        start = max(0, request.offset - self.shift * (request.offset // PAGE))
        items = self.ranking[start:start + request.limit]
        notes = []
        if not items and self.stray:
            items, notes = self.ranking[:request.limit], ["these points have no 'product_id' field"]
        end = request.offset + request.limit
        facets = SimpleNamespace(products=self.count, values={"category": self.categories})
        # scores fall slowly over the first 10 products, then drop: the gap floor keeps 10
        score = {p: (1.0 - 0.01 * i) if i < 10 else (0.5 - 0.01 * i) for i, p in enumerate(self.ranking)}
        return SimpleNamespace(products=[SimpleNamespace(product_id=p, score=score[p]) for p in items], notes=notes,
                               next_offset=end if end < len(self.ranking) else None,
                               facets=facets if request.facets else None)


def test_repeats_count_the_slots_that_show_a_product_again():
    assert repeats([["a", "b"], ["b", "c"], ["a"]]) == pytest.approx(2 / 5)
    assert repeats([]) == 0.0


def test_measure_tells_a_stable_honest_list_from_the_one_before():
    ranking = [f"p{i}" for i in range(40)]
    query = BenchQuery("colour", "purple dress", {"p0": 1, "p1": 1, "p2": 1})
    category_of = {p: "dress" if i < 10 else "mug" for i, p in enumerate(ranking)}
    good = Scripted(ranking, count=10, categories={"dress": 9, "mug": 1})
    before = Scripted(ranking, shift=3, stray=True, count=40, categories={"dress": 10, "mug": 30})
    report = measure({"embedded": good, "server": before}, [query], category_of)
    good_m = report["embedded"]["colour"]
    assert {k: good_m[k] for k in ("repeats_pages_1_3", "past_the_end_clean", "counted_products",
                                   "count_in_category", "top_grade_counted")} == {
        "repeats_pages_1_3": 0.0, "past_the_end_clean": 1.0, "counted_products": 10.0, "count_in_category": 0.9,
        "top_grade_counted": 1.0}
    # the floor rules side by side: gap stops at the drop (all dresses), none counts the whole list
    assert good_m["counted@gap"] == 10 and good_m["in_category@gap"] == 1.0 and good_m["top_grade@gap"] == 1.0
    assert good_m["counted@none"] == 40 and good_m["in_category@none"] == 0.25
    worse = report["server"]["colour"]
    assert worse["repeats_pages_1_3"] > 0 and worse["past_the_end_clean"] == 0.0
    assert worse["count_in_category"] == 0.25
    assert report["backends_identical_pages_1_3"] == 0.0
    assert "| rrf:60 | embedded | colour | 0.000 | 1.00 | 10.0 | 0.900 | 1.000 |" in table({"rrf:60": report})
