"""The explorer keeps its last walkthrough (keyed by text, edits and ablations) for /api/cell and
/api/step: a cached answer equals a fresh explorer's on the same request, an edit or an ablation or
another text builds a new one, and the weight steps of a walkthrough reused under an edit show the
edited weights (they are views of the parameters, put back after each request)."""

import pytest

from glassformer.explain.walkthrough import load_subject
from glassformer.explore.api import Explorer

TEXT = "ROMEO: so"
Q_WEIGHT = "blocks.0.self_attn.q_proj.weight"  # dec.0.self.h0.q.weight is its first 16 rows
EDIT = {"name": Q_WEIGHT, "index": [2, 3], "value": 4.5}
ABLATE = {"module": "blocks.0.self_attn", "head": 0}


@pytest.fixture(scope="module")
def explorers(checkpoint):
    """One explorer whose cache is watched, one asked afresh every time (its cache emptied first)."""
    cached = Explorer(load_subject(checkpoint), "cached")
    builds = []
    build = cached.subject.walkthrough
    cached.subject.walkthrough = lambda text: builds.append(text) or build(text)
    return cached, Explorer(load_subject(checkpoint), "fresh"), builds


def fresh(explorer, endpoint, body):
    explorer.last_walkthrough = None
    return answer(explorer, endpoint, body)


def answer(explorer, endpoint, body):
    data = explorer.call(endpoint, body)
    data.pop("ms")
    return data


# A weight cell (the edited one), a linear step's cell through it, and a softmax's cell.
CELLS = [("dec.0.self.h0.q.weight", [2, 3]), ("dec.0.self.h0.q", [4, 2]), ("dec.0.self.h0.probs", [5, 1])]


def test_cached_answers_equal_fresh_ones_and_each_change_builds_anew(explorers):
    cached, other, builds = explorers
    sequence = [{"text": TEXT}, {"text": TEXT, "edits": [EDIT]}, {"text": TEXT, "ablate": [ABLATE]},
                {"text": TEXT + "o"}, {"text": TEXT}]
    for body in sequence:
        builds.clear()
        answer(cached, "run", {**body, "lens": False})
        for step_id, index in CELLS:
            for _ in range(2):  # asked twice: the second is the walkthrough of the first again
                got = answer(cached, "cell", {**body, "id": step_id, "index": index})
                assert got == fresh(other, "cell", {**body, "id": step_id, "index": index}), (body, step_id)
            assert answer(cached, "step", {**body, "id": step_id}) == fresh(other, "step", {**body, "id": step_id})
        assert builds == [body["text"]], body  # one walkthrough per request's inputs, reused by every click


def test_an_edit_invalidates_and_its_cell_shows_the_edited_weight(explorers):
    cached, _, builds = explorers
    cell = {"id": "dec.0.self.h0.q.weight", "index": EDIT["index"]}
    plain = answer(cached, "cell", {"text": TEXT, **cell})
    builds.clear()
    edited = answer(cached, "cell", {"text": TEXT, "edits": [EDIT], **cell})
    again = answer(cached, "cell", {"text": TEXT, "edits": [EDIT], **cell})  # reused after the weight was put back
    assert builds == [TEXT] and edited == again and edited != plain
    assert edited["value"] == pytest.approx(EDIT["value"])
    assert cached.params[Q_WEIGHT][2, 3].item() != EDIT["value"]  # put back between requests
    other_value = {**EDIT, "value": -1.25}
    assert answer(cached, "cell", {"text": TEXT, "edits": [other_value], **cell})["value"] == pytest.approx(-1.25)
    assert answer(cached, "cell", {"text": TEXT, **cell}) == plain and len(builds) == 3
