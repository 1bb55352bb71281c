"""Options a request may carry (cluster/request_options.py): unknown names refused, a multipart
route's options from the form or the query string. Real FastAPI routes, no Serve (test_rest runs
the same rule on the served API)."""

import random

import pytest
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.testclient import TestClient

from cluster.request_options import RouteOptions, check_options, from_query_if_absent, route_options
from cluster.rest import _known_options, _ours, _with_query
from shards.errors import FashionSearchError, InvalidInput

SEARCH = RouteOptions(query=frozenset(), form=frozenset({"k", "category", "box"}), files=frozenset({"image"}),
                      repeatable=frozenset({"category", "box"}))


def test_a_name_the_route_does_not_take_is_refused_with_the_names_it_takes():
    with pytest.raises(InvalidInput, match=r"unknown option 'catgory' \(did you mean 'category'\?\): "
                                           r"POST /search takes box, category, image, k"):
        check_options("POST /search", SEARCH, [("catgory", "Shoes")], [])
    with pytest.raises(InvalidInput, match="unknown option 'zzz'"):
        check_options("POST /search", SEARCH, [], [("zzz", "1")])
    with pytest.raises(InvalidInput, match="takes no options"):
        check_options("GET /items/{item_id}", RouteOptions(*[frozenset()] * 4), [("k", "3")], [])


def test_an_option_given_twice_differently_or_a_file_in_the_url_is_refused():
    with pytest.raises(InvalidInput, match=r"k is given twice, in the URL \('4'\) and in the form \('5'\)"):
        check_options("POST /search", SEARCH, [("k", "4")], [("k", "5")])
    with pytest.raises(InvalidInput, match=r"k is given 2 times"):
        check_options("POST /search", SEARCH, [("k", "4"), ("k", "5")], [])
    with pytest.raises(InvalidInput, match="image is a file"):
        check_options("POST /search", SEARCH, [("image", "x")], [])
    check_options("POST /search", SEARCH, [("k", "4")], [("k", "4")])            # the same both ways: fine
    check_options("POST /search", SEARCH, [], [("category", "a"), ("category", "b")])   # one per image


def refused(query, form) -> bool:
    """The rule, stated name by name (the slow oracle of check_options)."""
    for name in {n for n, _ in query + form}:
        in_query, in_form = [v for n, v in query if n == name], [v for n, v in form if n == name]
        if name not in SEARCH.form:                                  # unknown (no file in these)
            return True
        if in_query and in_form and in_query != in_form:             # both ways, differently
            return True
        if name not in SEARCH.repeatable and max(len(in_query), len(in_form)) > 1:
            return True
    return False


def test_checking_and_merging_agree_with_the_rule_on_random_requests():
    """What check_options lets through is read as the form's value if it has one, else the URL's
    (all of them for a per-image option); what it refuses is what the rule refuses."""
    rng = random.Random(7)
    names = ["k", "category", "box", "kk"]
    for _ in range(2000):
        query = [(rng.choice(names), str(rng.randint(0, 2))) for _ in range(rng.randint(0, 3))]
        form = [(rng.choice(names), str(rng.randint(0, 2))) for _ in range(rng.randint(0, 3))]
        try:
            check_options("POST /search", SEARCH, query, form)
        except InvalidInput:
            assert refused(query, form), (query, form)
            continue
        assert not refused(query, form), (query, form)
        for name in ("k", "category", "box"):
            in_form, in_query = [v for n, v in form if n == name], [v for n, v in query if n == name]
            repeatable = name in SEARCH.repeatable
            read = (in_form if repeatable else in_form[0]) if in_form else None
            want = read if read is not None else (in_query if repeatable else in_query[0]) if in_query else None
            assert from_query_if_absent(query, name, read, repeatable) == want


@pytest.fixture(scope="module")
def client():
    app = FastAPI(dependencies=[Depends(_known_options)])
    app.add_exception_handler(FashionSearchError, _ours)

    @app.post("/search")
    async def search(request: Request, image: UploadFile = File(...), k: str | None = Form(None),
                     category: list[str] | None = Form(None)):
        k, category = _with_query(request, ("category",), k=k, category=category)
        return {"k": k, "category": category, "bytes": len(await image.read())}

    @app.get("/items")
    async def items(limit: str = "100"):
        return {"limit": limit}

    @app.get("/", include_in_schema=False)
    async def page():
        return {"page": True}

    return TestClient(app)


def test_a_route_reads_its_options_from_the_form_or_the_query(client):
    photo = {"image": ("a.jpg", b"xyz", "image/jpeg")}
    assert client.post("/search", files=photo, data={"k": "3"}).json() == {"k": "3", "category": None, "bytes": 3}
    assert client.post("/search?k=4", files=photo).json()["k"] == "4"
    assert client.post("/search?category=a&category=b", files=photo).json()["category"] == ["a", "b"]
    got = client.post("/search?k=4", files=photo, data={"k": "5"})
    assert got.status_code == 400 and "given twice" in got.json()["error"]
    got = client.get("/items?limt=3")
    assert got.status_code == 400 and "did you mean 'limit'" in got.json()["error"]
    assert client.get("/items?limit=3").json() == {"limit": "3"}
    assert client.get("/?utm_source=mail").json() == {"page": True}   # the web page takes what browsers add


def test_route_options_read_what_fastapi_declares(client):
    search = next(r for r in client.app.routes if getattr(r, "path", None) == "/search")
    got = route_options(search)
    assert got == RouteOptions(query=frozenset(), form=frozenset({"k", "category"}), files=frozenset({"image"}),
                               repeatable=frozenset({"category"}))
