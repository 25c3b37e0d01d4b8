import numpy as np
import pytest

from pllm.errors import InputError, UnknownNameError
from pllm.tasks.readouts import check_readout, probabilities, read_out, readouts_for
from pllm.tasks.spec import get_task


@pytest.fixture
def rating():
    return get_task("movielens-rating")


def _scores(p):  # probabilities over labels 1..5 -> log-likelihood scores
    return {str(i + 1): float(np.log(x)) for i, x in enumerate(p)}


def test_median_is_where_cumulative_probability_reaches_half(rating):
    # argmax says 5, the mean is pulled down by the spread, the median sits at 4
    s = _scores([0.10, 0.10, 0.05, 0.30, 0.45])
    assert read_out(rating, s, "argmax") == "5"
    assert read_out(rating, s, "median") == "4"
    assert float(read_out(rating, s, "expected")) == pytest.approx(0.1 + 0.2 + 0.15 + 1.2 + 2.25)


def test_median_minimises_expected_absolute_error(rating):
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.dirichlet(np.ones(5))
        med = float(read_out(rating, _scores(p), "median"))
        errs = [sum(pi * abs(c - (i + 1)) for i, pi in enumerate(p)) for c in range(1, 6)]
        assert sum(pi * abs(med - (i + 1)) for i, pi in enumerate(p)) == pytest.approx(min(errs))


def test_calibration_divides_by_the_content_free_distribution(rating):
    s = _scores([0.05, 0.05, 0.1, 0.2, 0.6])
    prior = _scores([0.02, 0.02, 0.06, 0.1, 0.8])  # the demonstrations alone already push to 5
    assert read_out(rating, s, "argmax") == "5"
    assert read_out(rating, s, "argmax", prior) == "1"  # 0.05/0.02 is the largest ratio
    p = probabilities(np.log([0.5, 0.5]), np.log([0.8, 0.2]))
    assert p == pytest.approx([0.2, 0.8])


def test_numeric_readouts_need_numeric_labels(rating):
    genre = get_task("movielens-genre")
    assert readouts_for(rating) == ["argmax", "expected", "median"]
    assert readouts_for(genre) == ["argmax"]
    with pytest.raises(InputError, match="numeric labels"):
        check_readout(genre, "median")
    with pytest.raises(UnknownNameError, match="known: argmax, expected, median"):
        check_readout(rating, "mode")
