"""The build's batch ids equal ids.image_id / ids.query_id on every kind of URL."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wit_retrieval import ids
from wit_retrieval.build import fast_ids

URLS = [
    "https://upload.wikimedia.org/wikipedia/commons/0/04/MGS_logo.JPG",
    "https://upload.wikimedia.org/wikipedia/commons/f/f9/Coin_(x).jpg",
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%C3%A9t%C3%A9.jpg",
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%c3%a9t%c3%a9.jpg",  # lower-case escapes
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%28x%29.jpg",  # escaped safe characters
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/%FF%FE.jpg",  # not UTF-8
    "http://Upload.Wikimedia.org/wikipedia/commons/a/ab/été 1.jpg",
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/x.jpg?download#frag",
]


def test_known_urls():
    for url in URLS:
        assert fast_ids.image_id(url) == ids.image_id(url), url
        normal = fast_ids.normal_url(url)
        assert fast_ids.query_id("val", normal, "https://en.wikipedia.org/wiki/X", "t") == ids.query_id(
            "val", url, "https://en.wikipedia.org/wiki/X", "t")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ09/()%_-.~éß C3A9F8 \t?#")), max_size=30))
def test_any_path(path):
    url = "https://upload.wikimedia.org/wikipedia/commons/" + path
    assert fast_ids.image_id(url) == ids.image_id(url)
